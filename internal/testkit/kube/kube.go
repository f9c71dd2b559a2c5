// Package kube holds the Kubernetes helpers the controller and e2e tests
// share. It is apart from testkit so tests without a cluster do not link
// client-go.
package kube

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

var (
	nonDNS  = regexp.MustCompile(`[^a-z0-9-]+`)
	nsCount atomic.Int32
)

// Namespace creates a namespace of the test's own, named after it. envtest
// runs no namespace controller, so at cleanup it deletes the ImageBuilds
// instead: they stop polling the test's registries once it is gone.
func Namespace(t testing.TB, c client.Client) string {
	t.Helper()
	base := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = strings.Trim(base[len(base)-40:], "-")
	}
	name := fmt.Sprintf("t%d-%s", nsCount.Add(1), base)
	Create(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	t.Cleanup(func() {
		_ = c.DeleteAllOf(context.Background(), &kilnv1.ImageBuild{}, client.InNamespace(name))
	})
	return name
}

// Create creates objs, failing the test on the first error.
func Create(t testing.TB, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s/%s: %v", o, o.GetNamespace(), o.GetName(), err)
		}
	}
}

// Get reads the ImageBuild ns/name.
func Get(t testing.TB, c client.Client, ns, name string) *kilnv1.ImageBuild {
	t.Helper()
	ib := &kilnv1.ImageBuild{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ib); err != nil {
		t.Fatalf("getting ImageBuild %s/%s: %v", ns, name, err)
	}
	return ib
}

// Update re-reads the ImageBuild, applies mutate and updates it, retrying
// on conflicts with the controller's status writes.
func Update(t testing.TB, c client.Client, ns, name string, mutate func(*kilnv1.ImageBuild)) {
	t.Helper()
	for range 10 {
		ib := Get(t, c, ns, name)
		mutate(ib)
		err := c.Update(context.Background(), ib)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatalf("updating ImageBuild %s/%s: %v", ns, name, err)
		}
	}
	t.Fatalf("updating ImageBuild %s/%s: conflicts persist", ns, name)
}

// Condition is the condition typ of ib, nil when absent.
func Condition(ib *kilnv1.ImageBuild, typ string) *metav1.Condition {
	return apimeta.FindStatusCondition(ib.Status.Conditions, typ)
}

// Ready reports Ready=True for ib's current generation.
func Ready(ib *kilnv1.ImageBuild) bool {
	c := Condition(ib, kilnv1.ReadyCondition)
	return c != nil && c.Status == metav1.ConditionTrue && ib.Status.ObservedGeneration == ib.Generation
}

// Stalled is the Stalled=True condition as an error, nil when not stalled.
func Stalled(ib *kilnv1.ImageBuild) error {
	if c := Condition(ib, kilnv1.StalledCondition); c != nil && c.Status == metav1.ConditionTrue {
		return fmt.Errorf("stalled: %s: %s", c.Reason, c.Message)
	}
	return nil
}

// Describe is ib's generations, failures and conditions, for failures.
func Describe(ib *kilnv1.ImageBuild) string {
	if ib == nil {
		return "(no ImageBuild)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d observed %d failures %d;", ib.Generation, ib.Status.ObservedGeneration, ib.Status.Failures)
	for _, c := range ib.Status.Conditions {
		fmt.Fprintf(&b, "\n  %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}
