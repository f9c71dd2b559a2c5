package controllers

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// eventsOf returns the object's events with reason.
func eventsOf(t *testing.T, ns, name, reason string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := env.k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// expectEventOnce checks that reason was emitted exactly once: one Event
// object and no series (the recorder turns a repeat into a series).
func expectEventOnce(t *testing.T, ns, name, reason string) {
	t.Helper()
	evs := eventsOf(t, ns, name, reason)
	if len(evs) != 1 || evs[0].Series != nil {
		var notes []string
		for _, e := range evs {
			notes = append(notes, fmt.Sprintf("%q series=%+v", e.Note, e.Series))
		}
		t.Errorf("%s events of %s/%s: %d (%s), want exactly one emission", reason, ns, name, len(evs), strings.Join(notes, "; "))
	}
}

// reconciles is the manager's count of finished ImageBuild reconciles.
func reconciles(t *testing.T) float64 {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "imagebuild" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// A base tag that does not exist yet is an external error: Ready=False
// BaseNotFound, retrying (kstatus: in progress), never Stalled. Pushing the
// base heals it with no edit of the ImageBuild, within the backoff.
func TestExternalErrorHealsWithoutTouchingTheObject(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	baseRef := reg.Host + "/base:later"
	ib := simpleBuild(ns, "ext", files.Put("/l.tar", testkit.Files(t, "l", "l")), reg, "ext")
	ib.Spec.Base = &kilnv1.Base{Image: baseRef}
	kube.Create(t, env.k8s, ib)
	var got *kilnv1.ImageBuild
	testkit.WaitFor(t, 60*time.Second, "Ready=False BaseNotFound", func() (bool, string) {
		got = kube.Get(t, env.k8s, ns, "ext")
		c := kube.Condition(got, kilnv1.ReadyCondition)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "BaseNotFound", kube.Describe(got)
	})
	if c := kube.Condition(got, kilnv1.StalledCondition); c != nil {
		t.Errorf("an external error stalled: %s", kube.Describe(got))
	}
	if c := kube.Condition(got, kilnv1.ReconcilingCondition); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("want Reconciling=True (kstatus: in progress): %s", kube.Describe(got))
	}
	if got.Status.ObservedGeneration != -1 {
		t.Errorf("a generation still being retried is not concluded: observedGeneration %d", got.Status.ObservedGeneration)
	}
	first := kube.Condition(got, kilnv1.ReadyCondition).Message
	// Let it retry a few times: the count goes to status.failures, the
	// message stays.
	testkit.WaitFor(t, 60*time.Second, "retries", func() (bool, string) {
		got = kube.Get(t, env.k8s, ns, "ext")
		return got.Status.Failures >= 3, kube.Describe(got)
	})
	if msg := kube.Condition(got, kilnv1.ReadyCondition).Message; msg != first {
		t.Errorf("Ready message changed across retries: %q -> %q", first, msg)
	}
	generation := got.Generation
	pushRandomImage(t, baseRef)
	got = waitReady(t, ns, "ext")
	if got.Generation != generation || got.Status.Failures != 0 || kube.Condition(got, kilnv1.ReconcilingCondition) != nil {
		t.Errorf("after healing: %s", kube.Describe(got))
	}
	expectEventOnce(t, ns, "ext", "BaseNotFound")
}

// A Ready object whose target registry fails the periodic check shows it
// (Ready=False with the reason) and recovers when the registry is back,
// without a rebuild.
func TestTargetCheckFailureShowsAndRecovers(t *testing.T) {
	cases := []struct {
		code   int
		reason string
	}{
		{http.StatusServiceUnavailable, "TransientError"},
		{http.StatusUnauthorized, "Unauthorized"},
	}
	for _, c := range cases {
		t.Run(c.reason, func(t *testing.T) {
			ns := kube.Namespace(t, env.k8s)
			reg := testkit.NewRegistry(t)
			files := testkit.NewFileServer(t)
			ib := simpleBuild(ns, "chk", files.Put("/l.tar", testkit.Files(t, "l", "l")), reg, "chk")
			ib.Annotations = map[string]string{testIntervalAnnotation: "300ms"}
			kube.Create(t, env.k8s, ib)
			built := waitReady(t, ns, "chk")
			ready := *kube.Condition(built, kilnv1.ReadyCondition)
			writes := reg.Writes()
			reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
					w.WriteHeader(c.code)
					return true
				}
				return false
			})

			var got *kilnv1.ImageBuild
			testkit.WaitFor(t, 60*time.Second, "Ready=False "+c.reason, func() (bool, string) {
				got = kube.Get(t, env.k8s, ns, "chk")
				r := kube.Condition(got, kilnv1.ReadyCondition)
				return r != nil && r.Status == metav1.ConditionFalse && r.Reason == c.reason, kube.Describe(got)
			})
			if got.Status.Digest != built.Status.Digest || kube.Condition(got, kilnv1.StalledCondition) != nil {
				t.Errorf("during the failure: digest %s (built %s), %s", got.Status.Digest, built.Status.Digest, kube.Describe(got))
			}
			testkit.WaitFor(t, 60*time.Second, "a retry", func() (bool, string) {
				got = kube.Get(t, env.k8s, ns, "chk")
				return got.Status.Failures >= 2, kube.Describe(got)
			})
			reg.SetFault(nil)
			got = waitReady(t, ns, "chk")
			if now := kube.Condition(got, kilnv1.ReadyCondition); now.Reason != ready.Reason || now.Message != ready.Message {
				t.Errorf("Ready after recovery %s: %q, before the failure %s: %q", now.Reason, now.Message, ready.Reason, ready.Message)
			}
			if n := reg.Writes() - writes; n != 0 || got.Status.LastBuild.CompletionTime != built.Status.LastBuild.CompletionTime {
				t.Errorf("recovery rebuilt: %d registry writes, lastBuild %v -> %v", n, built.Status.LastBuild.CompletionTime, got.Status.LastBuild.CompletionTime)
			}
			expectEventOnce(t, ns, "chk", c.reason)
			waitEvents(t, ns, "chk", EventVerified)
		})
	}
}

// A metadata-only edit of a referenced ConfigMap (and an edit of a key the
// build does not use) re-checks the content and writes nothing: no status
// write, no event, no registry write.
func TestMetadataOnlyConfigMapEditWritesNothing(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	kube.Create(t, env.k8s, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: ns},
		BinaryData: map[string][]byte{"l.tar": testkit.Files(t, "l", "l")},
		Data:       map[string]string{"unused": "1"},
	})

	kube.Create(t, env.k8s, &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "meta", Namespace: ns},
		Spec: kilnv1.ImageBuildSpec{
			Layers: []kilnv1.Layer{{Name: "l", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "files", Key: "l.tar"}}}},
			Target: kilnv1.Target{Image: reg.Host + "/meta:1"},
		},
	})

	before := waitReady(t, ns, "meta")
	waitEvents(t, ns, "meta", EventPushed)
	countEvents := func() int {
		var list eventsv1.EventList
		if err := env.k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		return len(list.Items)
	}
	events, writes := countEvents(), reg.Writes()
	for i, edit := range []func(cm *corev1.ConfigMap){
		func(cm *corev1.ConfigMap) { cm.Labels = map[string]string{"team": "a"} },
		func(cm *corev1.ConfigMap) { cm.Annotations = map[string]string{"note": "x"} },
		func(cm *corev1.ConfigMap) { cm.Data["unused"] = "2" },
	} {
		n := reconciles(t)
		cm := &corev1.ConfigMap{}
		if err := env.k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "files"}, cm); err != nil {
			t.Fatal(err)
		}
		edit(cm)
		if err := env.k8s.Update(context.Background(), cm); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, 30*time.Second, fmt.Sprintf("the re-check of edit %d", i), func() (bool, string) {
			return reconciles(t) > n, "no reconcile yet"
		})
	}
	after := kube.Get(t, env.k8s, ns, "meta")
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("status written: resourceVersion %s -> %s\n%s", before.ResourceVersion, after.ResourceVersion, kube.Describe(after))
	}
	if n := reg.Writes() - writes; n != 0 {
		t.Errorf("%d registry writes", n)
	}
	if n := countEvents() - events; n != 0 {
		t.Errorf("%d new events", n)
	}
}

// requestedAt reconciles now (the target is verified again) and pushes
// nothing when nothing changed; forceAt equal to it pushes exactly once.
func TestRequestedAtAndForceAt(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	kube.Create(t, env.k8s, simpleBuild(ns, "req", files.Put("/l.tar", testkit.Files(t, "l", "l")), reg, "req"))
	built := waitReady(t, ns, "req")
	writes, heads := reg.Writes(), reg.Count("HEAD manifest")

	annotate := func(kv ...string) {
		kube.Update(t, env.k8s, ns, "req", func(ib *kilnv1.ImageBuild) {
			if ib.Annotations == nil {
				ib.Annotations = map[string]string{}
			}
			for i := 0; i+1 < len(kv); i += 2 {
				ib.Annotations[kv[i]] = kv[i+1]
			}
		})

	}
	handled := func(v string) *kilnv1.ImageBuild {
		var got *kilnv1.ImageBuild
		testkit.WaitFor(t, 60*time.Second, "lastHandledReconcileAt "+v, func() (bool, string) {
			got = kube.Get(t, env.k8s, ns, "req")
			return got.Status.LastHandledReconcileAt == v && kube.Ready(got), kube.Describe(got) + " handled " + got.Status.LastHandledReconcileAt
		})
		return got
	}

	annotate(RequestedAtAnnotation, "2024-01-01T00:00:00Z")
	got := handled("2024-01-01T00:00:00Z")
	if n := reg.Writes() - writes; n != 0 {
		t.Errorf("requestedAt with nothing changed: %d registry writes", n)
	}
	if reg.Count("HEAD manifest") == heads {
		t.Errorf("requestedAt did not verify the target (no HEAD)")
	}
	if got.Status.LastBuild.CompletionTime != built.Status.LastBuild.CompletionTime {
		t.Errorf("requestedAt with nothing changed rebuilt")
	}

	writes = reg.Writes()
	puts := reg.Count("PUT manifest")
	annotate(RequestedAtAnnotation, "force-1", ForceAtAnnotation, "force-1")
	got = handled("force-1")
	if n, p := reg.Writes()-writes, reg.Count("PUT manifest")-puts; n != 1 || p != 1 {
		t.Errorf("forceAt: %d registry writes, %d manifest PUTs; want exactly one push (one manifest PUT)", n, p)
	}
	if got.Status.Digest != built.Status.Digest || got.Status.LastBuild.Result != kilnv1.ResultPushed {
		t.Errorf("forced push: digest %s (built %s), lastBuild %+v", got.Status.Digest, built.Status.Digest, got.Status.LastBuild)
	}
	// Handled: nothing more is pushed (a later verification finds it).
	writes = reg.Writes()
	annotate(RequestedAtAnnotation, "after-force")
	handled("after-force")
	if n := reg.Writes() - writes; n != 0 {
		t.Errorf("a new requestedAt (forceAt now different) pushed again: %d writes", n)
	}
}

// Build slots are separate from reconcile workers: with every slot held
// by a hanging build, another build shows Queued with its position, and a
// Ready object still handles a request (verification) at once.
func TestQueuedBuildsDoNotBlockReconciles(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	kube.Create(t, env.k8s, simpleBuild(ns, "ready", files.Put("/r.tar", testkit.Files(t, "r", "r")), reg, "ready"))
	waitReady(t, ns, "ready")

	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{}, 16)
	hang := func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
		http.Error(w, "released", http.StatusServiceUnavailable)
	}
	slots := orDefault(env.r.MaxConcurrentBuilds, DefaultMaxConcurrentBuilds)
	for i := range slots + 1 {
		// One path each: builds of one URL would share one fetch.
		path := fmt.Sprintf("/hang%d.tar", i)
		u := files.Handle(path, hang)
		kube.Create(t, env.k8s, simpleBuild(ns, fmt.Sprintf("hang%d", i), u, reg, fmt.Sprintf("hang%d", i)))
	}
	for range slots {
		select {
		case <-started:
		case <-time.After(60 * time.Second):
			t.Fatal("the hanging builds did not all start")
		}
	}
	testkit.WaitFor(t, 60*time.Second, "one build Queued", func() (bool, string) {
		var why []string
		for i := range slots + 1 {
			ib := kube.Get(t, env.k8s, ns, fmt.Sprintf("hang%d", i))
			c := kube.Condition(ib, kilnv1.ReconcilingCondition)
			if c != nil && c.Reason == ReasonQueued && ib.Status.QueuePosition >= 1 && c.Message == "waiting for a build slot" {
				return true, ""
			}
			why = append(why, kube.Describe(ib))
		}
		return false, strings.Join(why, "\n")
	})
	kube.Update(t, env.k8s, ns, "ready", func(ib *kilnv1.ImageBuild) {
		ib.Annotations = map[string]string{RequestedAtAnnotation: "while-busy"}
	})

	testkit.WaitFor(t, 30*time.Second, "the request handled while every slot is busy", func() (bool, string) {
		ib := kube.Get(t, env.k8s, ns, "ready")
		return ib.Status.LastHandledReconcileAt == "while-busy", kube.Describe(ib)
	})
	for i := range slots + 1 {
		_ = env.k8s.Delete(context.Background(), kube.Get(t, env.k8s, ns, fmt.Sprintf("hang%d", i)))
	}
}
