//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// namespace creates a namespace of its own for the test. envtest runs no
// namespace controller, so namespaces are not deleted; the run is throwaway.
func namespace(t testing.TB) string {
	t.Helper()
	base := nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(base) > 40 {
		base = base[len(base)-40:]
	}
	name := strings.Trim(fmt.Sprintf("e2e-%s-%04x", strings.Trim(base, "-"), rand.IntN(1<<16)), "-")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := s.k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

// imageBuild returns an ImageBuild skeleton: scratch linux/amd64 base,
// target repo in the suite's registry.
func imageBuild(ns, name, repo string, layers ...kilnv1.Layer) *kilnv1.ImageBuild {
	return &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kilnv1.ImageBuildSpec{
			Base:   &kilnv1.Base{Image: kilnv1.ScratchImage, Platform: "linux/amd64"},
			Layers: layers,
			Target: kilnv1.Target{Image: s.reg.Addr() + "/" + repo + ":e2e"},
		},
	}
}

func urlLayer(name, url string) kilnv1.Layer {
	return kilnv1.Layer{Name: name, Source: kilnv1.Source{URL: url}}
}

func create(t testing.TB, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := s.k8s.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s/%s: %v", o, o.GetNamespace(), o.GetName(), err)
		}
	}
}

func get(t testing.TB, ns, name string) *kilnv1.ImageBuild {
	t.Helper()
	ib := &kilnv1.ImageBuild{}
	if err := s.k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ib); err != nil {
		t.Fatalf("getting ImageBuild %s/%s: %v", ns, name, err)
	}
	return ib
}

// waitFor polls the ImageBuild until done returns true, or fails the test
// after timeout with its conditions and the manager log's tail.
func waitFor(t testing.TB, ns, name string, timeout time.Duration, what string, done func(*kilnv1.ImageBuild) (bool, error)) *kilnv1.ImageBuild {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var ib *kilnv1.ImageBuild
	for {
		ib = &kilnv1.ImageBuild{}
		err := s.k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ib)
		if err == nil {
			ok, cerr := done(ib)
			if cerr != nil {
				t.Fatalf("ImageBuild %s/%s while waiting for %s: %v\nconditions: %s", ns, name, what, cerr, conditions(ib))
			}
			if ok {
				return ib
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ImageBuild %s/%s: not %s after %s (last get error %v)\nconditions: %s\nmanager log tail:\n%s",
				ns, name, what, timeout, err, conditions(ib), s.mgr.tail(40))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitReady waits for Ready=True at the current generation; a Stalled
// build fails at once with its reason and message.
func waitReady(t testing.TB, ns, name string, timeout time.Duration) *kilnv1.ImageBuild {
	t.Helper()
	return waitFor(t, ns, name, timeout, "Ready", func(ib *kilnv1.ImageBuild) (bool, error) {
		if c := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.StalledCondition); c != nil && c.Status == metav1.ConditionTrue {
			return false, fmt.Errorf("stalled: %s: %s", c.Reason, c.Message)
		}
		c := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReadyCondition)
		return c != nil && c.Status == metav1.ConditionTrue && ib.Status.ObservedGeneration == ib.Generation, nil
	})
}

func conditions(ib *kilnv1.ImageBuild) string {
	if ib == nil {
		return "(none)"
	}
	var b strings.Builder
	for _, c := range ib.Status.Conditions {
		fmt.Fprintf(&b, "\n  %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

func condition(ib *kilnv1.ImageBuild, typ string) *metav1.Condition {
	return apimeta.FindStatusCondition(ib.Status.Conditions, typ)
}

// digestRef is repo@digest of a Ready build, as status.image records it.
func digestRef(t testing.TB, ib *kilnv1.ImageBuild) string {
	t.Helper()
	if ib.Status.Image == "" || !strings.Contains(ib.Status.Image, "@sha256:") || !strings.HasSuffix(ib.Status.Image, ib.Status.Digest) {
		t.Fatalf("ImageBuild %s: status.image %q is not repo@%s", ib.Name, ib.Status.Image, ib.Status.Digest)
	}
	return ib.Status.Image
}

func keyOf(ns, name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
