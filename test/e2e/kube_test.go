//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

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
	return kilnv1.Layer{Name: name, Source: &kilnv1.Source{URL: url}}
}

// waitFor polls the ImageBuild until done returns true, or fails the test
// after timeout with its conditions and the manager log's tail.
func waitFor(t testing.TB, ns, name string, timeout time.Duration, what string, done func(*kilnv1.ImageBuild) (bool, error)) *kilnv1.ImageBuild {
	t.Helper()
	var ib *kilnv1.ImageBuild
	why, ok := testkit.Poll(timeout, func() (bool, string) {
		got := &kilnv1.ImageBuild{}
		if err := s.k8s.Get(context.Background(), keyOf(ns, name), got); err != nil {
			return false, fmt.Sprintf("last get error %v", err)
		}
		ib = got
		ok, err := done(ib)
		if err != nil {
			t.Fatalf("ImageBuild %s/%s while waiting for %s: %v\nconditions: %s", ns, name, what, err, kube.Describe(ib))
		}
		return ok, kube.Describe(ib)
	})
	if !ok {
		t.Fatalf("ImageBuild %s/%s: not %s after %s: %s\nmanager log tail:\n%s", ns, name, what, timeout, why, s.mgr.tail(40))
	}
	return ib
}

// waitReady waits for Ready=True at the current generation; a Stalled
// build fails at once with its reason and message.
func waitReady(t testing.TB, ns, name string, timeout time.Duration) *kilnv1.ImageBuild {
	t.Helper()
	return waitFor(t, ns, name, timeout, "Ready", func(ib *kilnv1.ImageBuild) (bool, error) {
		return kube.Ready(ib), kube.Stalled(ib)
	})
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
