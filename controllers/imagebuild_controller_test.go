package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// simpleBuild is scratch + one URL layer + env, pushed to reg/repo:1.0.
func simpleBuild(ns, name, layerURL string, reg *testkit.Registry, repo string) *kilnv1.ImageBuild {
	return &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: kilnv1.ImageBuildSpec{
			Layers: []kilnv1.Layer{{Name: "app", Source: &kilnv1.Source{URL: layerURL}}},
			Config: &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "APP", Value: "1"}}},
			Target: kilnv1.Target{Image: reg.Host + "/" + repo + ":1.0"},
		},
	}
}

func TestHappyPathNoChurnAndRebuilds(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	appTar := testkit.Files(t, "app/hello.txt", "hello\n")
	appGz := testkit.Gzip(t, appTar)
	appURL := files.Put("/app.tar.gz", appGz)
	cmTar := testkit.Files(t, "etc/app.conf", "v=1\n")
	kube.Create(t, env.k8s, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "app-files", Namespace: ns},
		BinaryData: map[string][]byte{"conf.tar": cmTar},
	})

	ib := simpleBuild(ns, "app", appURL, reg, "team/app")
	ib.Spec.Layers = append(ib.Spec.Layers, kilnv1.Layer{Name: "conf", Source: &kilnv1.Source{
		ConfigMap: &kilnv1.KeySelector{Name: "app-files", Key: "conf.tar"}}})
	ib.Spec.Target.Tags = []string{"latest"}
	// Verified every ~300ms, so that "no churn" below sees several checks.
	ib.Annotations = map[string]string{testIntervalAnnotation: "300ms"}
	kube.Create(t, env.k8s, ib)

	got := waitReady(t, ns, "app")
	st := got.Status
	repo := reg.Host + "/team/app"
	checks := []struct {
		what string
		ok   bool
	}{
		{"image is repo@digest", st.Image == repo+"@"+st.Digest},
		{"digest", strings.HasPrefix(st.Digest, "sha256:")},
		{"configDigest", strings.HasPrefix(st.ConfigDigest, "sha256:")},
		{"inputDigest", strings.HasPrefix(st.InputDigest, "sha256:")},
		{"inputsFingerprint", strings.HasPrefix(st.InputsFingerprint, "sha256:")},
		{"observedGeneration", st.ObservedGeneration == got.Generation},
		{"base scratch", st.Base != nil && st.Base.Image == "scratch" && st.Base.Digest == ""},
		{"two layers", len(st.Layers) == 2},
		{"lastBuild pushed", st.LastBuild != nil && st.LastBuild.Result == kilnv1.ResultPushed && st.LastBuild.BytesIn > 0 && st.LastBuild.BytesOut > 0},
		{"history has the digest", len(st.History) == 1 && st.History[0].Digest == st.Digest && st.History[0].InputDigest == st.InputDigest},
		{"tags", strings.Contains(strings.Join(st.Tags, ","), "latest")},
		{"no failures", st.Failures == 0},
		{"not reconciling or stalled", kube.Condition(got, kilnv1.ReconcilingCondition) == nil && kube.Condition(got, kilnv1.StalledCondition) == nil},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("status: %s wrong: %+v", c.what, st)
		}
	}
	if len(st.Layers) == 2 {
		app, conf := st.Layers[0], st.Layers[1]
		if app.Name != "app" || app.DiffID != testkit.Digest(appTar) || app.SourceCompression != "gzip" || app.SourceDigest != testkit.Digest(appGz) {
			t.Errorf("layer app provenance: %+v", app)
		}
		if conf.Name != "conf" || conf.DiffID != testkit.Digest(cmTar) || conf.SourceDigest != testkit.Digest(cmTar) {
			t.Errorf("layer conf provenance: %+v", conf)
		}
	}
	checkPrinterColumns(t, ns, "app", "True", st.Image)
	waitEvents(t, ns, "app", EventBuildStarted, EventPushed)

	t.Run("no churn on periodic verification", func(t *testing.T) {
		before := kube.Get(t, env.k8s, ns, "app")
		writes := reg.Writes()
		heads := reg.Count("HEAD manifest")
		testkit.WaitFor(t, 60*time.Second, "three verifications of the target", func() (bool, string) {
			n := reg.Count("HEAD manifest") - heads
			return n >= 3, fmt.Sprintf("%d HEADs", n)
		})
		after := kube.Get(t, env.k8s, ns, "app")
		if after.ResourceVersion != before.ResourceVersion {
			t.Errorf("status written by verifications that found nothing: resourceVersion %s -> %s\n%s\n%s",
				before.ResourceVersion, after.ResourceVersion, kube.Describe(before), kube.Describe(after))
		}
		if n := reg.Writes() - writes; n != 0 {
			t.Errorf("%d registry writes on verification, want 0", n)
		}
	})

	t.Run("spec change rebuilds", func(t *testing.T) {
		old := kube.Get(t, env.k8s, ns, "app").Status.Digest
		kube.Update(t, env.k8s, ns, "app", func(ib *kilnv1.ImageBuild) { ib.Spec.Config.Env[0].Value = "2" })
		got := waitReady(t, ns, "app")
		if got.Status.Digest == old {
			t.Fatalf("digest unchanged after a spec change: %s", old)
		}
		if len(got.Status.History) != 2 || got.Status.History[1].Digest != old {
			t.Errorf("history: %+v", got.Status.History)
		}
	})

	t.Run("ConfigMap change rebuilds", func(t *testing.T) {
		old := kube.Get(t, env.k8s, ns, "app").Status
		newTar := testkit.Files(t, "etc/app.conf", "v=2\n")
		cm := &corev1.ConfigMap{}
		if err := env.k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "app-files"}, cm); err != nil {
			t.Fatal(err)
		}
		cm.BinaryData["conf.tar"] = newTar
		if err := env.k8s.Update(context.Background(), cm); err != nil {
			t.Fatal(err)
		}
		var got *kilnv1.ImageBuild
		testkit.WaitFor(t, 60*time.Second, "rebuild with the new ConfigMap", func() (bool, string) {
			got = kube.Get(t, env.k8s, ns, "app")
			return kube.Ready(got) && got.Status.Digest != old.Digest, kube.Describe(got)
		})
		if d := got.Status.Layers[1].DiffID; d != testkit.Digest(newTar) {
			t.Errorf("conf layer diffID %s, want %s (the new ConfigMap content)", d, testkit.Digest(newTar))
		}
		if got.Status.InputsFingerprint == old.InputsFingerprint {
			t.Errorf("inputsFingerprint did not change")
		}
	})
}

// checkPrinterColumns asks the API server for the kubectl table of the
// object and checks the READY and IMAGE cells.
func checkPrinterColumns(t *testing.T, ns, name, ready, image string) {
	t.Helper()
	hc, err := rest.HTTPClientFor(env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("%s/apis/kiln.dev/v1alpha1/namespaces/%s/imagebuilds/%s", strings.TrimSuffix(env.cfg.Host, "/"), ns, name)
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/json;as=Table;g=meta.k8s.io;v=v1")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil || len(table.Rows) != 1 {
		t.Fatalf("table response (%v): %s", err, body)
	}
	cols := map[string]any{}
	for i, c := range table.ColumnDefinitions {
		cols[c.Name] = table.Rows[0].Cells[i]
	}
	if cols["Ready"] != ready || cols["Image"] != image {
		t.Errorf("printer columns: %v, want Ready=%s Image=%s", cols, ready, image)
	}
}

// waitEvents waits until the object has events with all these reasons.
func waitEvents(t *testing.T, ns, name string, reasons ...string) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "events "+strings.Join(reasons, ","), func() (bool, string) {
		var list eventsv1.EventList
		if err := env.k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		have := map[string]bool{}
		for _, e := range list.Items {
			if e.Regarding.Name == name {
				have[e.Reason] = true
			}
		}
		for _, r := range reasons {
			if !have[r] {
				return false, fmt.Sprintf("have %v", have)
			}
		}
		return true, ""
	})
}

func TestSuspendStopsWork(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	ib := simpleBuild(ns, "sus", files.Put("/a.tar", testkit.Files(t, "a", "a")), reg, "sus")
	ib.Spec.Suspend = true
	kube.Create(t, env.k8s, ib)
	// A new object reads "never reconciled" (kstatus: InProgress) before
	// the manager touches it: the CRD defaults status.observedGeneration.
	if got := kube.Get(t, env.k8s, ns, "sus"); got.Status.ObservedGeneration != -1 {
		t.Errorf("new ImageBuild: observedGeneration %d, want the default -1", got.Status.ObservedGeneration)
	}
	// A sentinel created after it is built: the manager has seen the
	// suspended object by then (events of one informer arrive in order).
	kube.Create(t, env.k8s, simpleBuild(ns, "sentinel", files.Put("/s.tar", testkit.Files(t, "s", "s")), reg, "sentinel"))
	waitReady(t, ns, "sentinel")
	writes := reg.Writes()
	if got := kube.Get(t, env.k8s, ns, "sus"); got.Status.ObservedGeneration != -1 || len(got.Status.Conditions) != 0 {
		t.Fatalf("suspended ImageBuild got status: %s", kube.Describe(got))
	}
	if n := reg.Writes() - writes; n != 0 {
		t.Fatalf("%d registry writes while suspended", n)
	}
	if n := files.Gets("/a.tar"); n != 0 {
		t.Fatalf("%d source fetches while suspended", n)
	}
	kube.Update(t, env.k8s, ns, "sus", func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = false })
	waitReady(t, ns, "sus")
}

func pushRandomImage(t *testing.T, ref string) string {
	t.Helper()
	img, err := sandbox.RandomImage(64, v1.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("pushing base %s: %v", ref, err)
	}
	d, _ := img.Digest()
	return d.String()
}

func TestBaseDrift(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	baseRef := reg.Host + "/base:stable"
	first := pushRandomImage(t, baseRef)
	layerURL := files.Put("/l.tar", testkit.Files(t, "x", "x"))
	for _, policy := range []kilnv1.BaseUpdatePolicy{kilnv1.BaseUpdateRebuild, kilnv1.BaseUpdateReport} {
		ib := simpleBuild(ns, strings.ToLower(string(policy)), layerURL, reg, "drift-"+strings.ToLower(string(policy)))
		ib.Spec.Base = &kilnv1.Base{Image: baseRef, UpdatePolicy: policy, PollInterval: &metav1.Duration{Duration: time.Second}}
		kube.Create(t, env.k8s, ib)
	}
	before := map[string]string{}
	for _, n := range []string{"rebuild", "report"} {
		got := waitReady(t, ns, n)
		if got.Status.Base.Digest != first || got.Status.Base.RefDigest != first {
			t.Fatalf("%s: base status %+v, want digest %s", n, got.Status.Base, first)
		}
		before[n] = got.Status.Digest
	}
	second := pushRandomImage(t, baseRef)

	testkit.WaitFor(t, 60*time.Second, "Rebuild policy rebuilds on the moved base", func() (bool, string) {
		got := kube.Get(t, env.k8s, ns, "rebuild")
		return kube.Ready(got) && got.Status.Base.RefDigest == second && got.Status.Digest != before["rebuild"], kube.Describe(got)
	})
	testkit.WaitFor(t, 60*time.Second, "Report policy sets BaseUpToDate=False", func() (bool, string) {
		got := kube.Get(t, env.k8s, ns, "report")
		c := kube.Condition(got, kilnv1.BaseUpToDateCondition)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, second), kube.Describe(got)
	})
	got := kube.Get(t, env.k8s, ns, "report")
	if got.Status.Digest != before["report"] || !kube.Ready(got) {
		t.Errorf("Report policy rebuilt or lost Ready: %s digest %s", kube.Describe(got), got.Status.Digest)
	}
	waitEvents(t, ns, "report", EventBaseChanged)
	waitEvents(t, ns, "rebuild", EventBaseChanged)
}

// A build looks its tag base up once, in the engine (status.base.refDigest
// comes from that lookup); the controller HEADs the base only on its poll
// schedule, which has not come due here.
func TestBuildLooksUpTheBaseOnce(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	baseRef := reg.Host + "/base:stable"
	digest := pushRandomImage(t, baseRef)
	var mu sync.Mutex
	lookups := map[string]int{}
	reg.SetFault(func(_ http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v2/base/manifests/") {
			mu.Lock()
			lookups[r.Method]++
			mu.Unlock()
		}
		return false
	})

	ib := simpleBuild(ns, "once", files.Put("/l.tar", testkit.Files(t, "x", "x")), reg, "once")
	ib.Spec.Base = &kilnv1.Base{Image: baseRef}
	kube.Create(t, env.k8s, ib)
	got := waitReady(t, ns, "once")
	if got.Status.Base == nil || got.Status.Base.RefDigest != digest {
		t.Fatalf("status.base = %+v, want refDigest %s", got.Status.Base, digest)
	}
	mu.Lock()
	defer mu.Unlock()
	if lookups[http.MethodGet] != 1 || lookups[http.MethodHead] != 0 {
		t.Errorf("base manifest requests %v, want one GET (the engine's) and no HEAD", lookups)
	}
}

func TestPermanentErrorStallsUntilFixed(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	data := testkit.Files(t, "a", "a")
	ib := simpleBuild(ns, "bad", files.Put("/a.tar", data), reg, "bad")
	wrong := "sha256:" + strings.Repeat("0", 64)
	ib.Spec.Layers[0].Digest = wrong
	kube.Create(t, env.k8s, ib)
	var got *kilnv1.ImageBuild
	testkit.WaitFor(t, 60*time.Second, "Stalled", func() (bool, string) {
		got = kube.Get(t, env.k8s, ns, "bad")
		c := kube.Condition(got, kilnv1.StalledCondition)
		return c != nil && c.Status == metav1.ConditionTrue, kube.Describe(got)
	})
	stalled := kube.Condition(got, kilnv1.StalledCondition)
	ready := kube.Condition(got, kilnv1.ReadyCondition)
	if stalled.Reason != "DigestMismatch" || ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != "DigestMismatch" {
		t.Errorf("conditions: %s", kube.Describe(got))
	}
	for _, want := range []string{`"app"`, wrong, testkit.Digest(data)} {
		if !strings.Contains(stalled.Message, want) {
			t.Errorf("Stalled message %q does not name %s", stalled.Message, want)
		}
	}
	if n := reg.Writes(); n != 0 {
		t.Errorf("%d registry writes for a failed build", n)
	}
	if got.Status.ObservedGeneration != got.Generation || kube.Condition(got, kilnv1.ReconcilingCondition) != nil {
		t.Errorf("a stall concludes the generation (kstatus Failed): %s", kube.Describe(got))
	}
	waitEvents(t, ns, "bad", "DigestMismatch")
	// requestedAt retries a Stalled object: the same bytes fail the same
	// way, counted in status.failures, with no second event.
	gets := files.Gets("/a.tar")
	kube.Update(t, env.k8s, ns, "bad", func(ib *kilnv1.ImageBuild) {
		ib.Annotations = map[string]string{RequestedAtAnnotation: "retry-1"}
	})

	testkit.WaitFor(t, 60*time.Second, "the request handled", func() (bool, string) {
		got = kube.Get(t, env.k8s, ns, "bad")
		return got.Status.LastHandledReconcileAt == "retry-1" && got.Status.Failures == 2, kube.Describe(got)
	})
	if c := kube.Condition(got, kilnv1.StalledCondition); c == nil || c.Message != stalled.Message {
		t.Errorf("Stalled after the retry: %s (message before: %q)", kube.Describe(got), stalled.Message)
	}
	if files.Gets("/a.tar") == gets {
		t.Errorf("requestedAt did not retry the build (no fetch)")
	}
	if n := reg.Writes(); n != 0 {
		t.Errorf("%d registry writes for a failed build", n)
	}
	expectEventOnce(t, ns, "bad", "DigestMismatch")

	kube.Update(t, env.k8s, ns, "bad", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Digest = testkit.Digest(data) })
	got = waitReady(t, ns, "bad")
	if kube.Condition(got, kilnv1.StalledCondition) != nil || got.Status.Failures != 0 {
		t.Errorf("after the fix: %s", kube.Describe(got))
	}
}

// A missing ConfigMap depends on the outside world (it is often applied a
// moment after the ImageBuild): Ready=False SourceNotFound, retried with
// backoff, never Stalled; creating it builds. (Until issue 11 it stalled.)
func TestMissingConfigMapIsNotReadyThenCreatingItBuilds(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	ib := &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: ns},
		Spec: kilnv1.ImageBuildSpec{
			Layers: []kilnv1.Layer{{Name: "conf", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "later", Key: "l.tar"}}}},
			Target: kilnv1.Target{Image: reg.Host + "/late:1"},
		},
	}
	kube.Create(t, env.k8s, ib)
	testkit.WaitFor(t, 60*time.Second, "Ready=False SourceNotFound, retrying", func() (bool, string) {
		got := kube.Get(t, env.k8s, ns, "late")
		c, rec := kube.Condition(got, kilnv1.ReadyCondition), kube.Condition(got, kilnv1.ReconcilingCondition)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "SourceNotFound" && strings.Contains(c.Message, `"later"`) &&
			rec != nil && rec.Status == metav1.ConditionTrue && kube.Condition(got, kilnv1.StalledCondition) == nil, kube.Describe(got)
	})
	kube.Create(t, env.k8s, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: ns},
		BinaryData: map[string][]byte{"l.tar": testkit.Files(t, "l", "l")}})

	waitReady(t, ns, "late")
}

func TestTransientRegistryFailuresRetryToTheSameDigest(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	files := testkit.NewFileServer(t)
	layerURL := files.Put("/t.tar.gz", testkit.Gzip(t, testkit.Files(t, "t", "transient")))

	clean := testkit.NewRegistry(t)
	kube.Create(t, env.k8s, simpleBuild(ns, "clean", layerURL, clean, "t"))
	want := waitReady(t, ns, "clean").Status.Digest

	flaky := testkit.NewRegistry(t)
	var mu sync.Mutex
	failed := map[string]int{}
	flaky.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()

		kind := r.Method + " " + endpointKind(r.URL.Path)
		if failed[kind] < 3 {
			failed[kind]++
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})

	kube.Create(t, env.k8s, simpleBuild(ns, "flaky", layerURL, flaky, "t"))
	got := waitReady(t, ns, "flaky")
	if got.Status.Digest != want {
		t.Errorf("digest after retries %s, clean run %s", got.Status.Digest, want)
	}
	mu.Lock()
	// The faults must have happened, or this sub-case proves nothing: every
	// kind of request the push made was refused exactly three times first.
	for _, kind := range []string{"HEAD manifest", "POST upload", "PUT upload", "PUT manifest"} {
		if failed[kind] != 3 {
			t.Errorf("%q got %d injected 503s, want 3 (all: %v)", kind, failed[kind], failed)
		}
	}
	t.Logf("503s served: %v; status.failures at Ready: %d", failed, got.Status.Failures)
	mu.Unlock()

	// More 503s than the registry client retries in one build: the build
	// fails as transient (Reconciling, failures counted, BuildFailed) and
	// the controller's backoff retries it to the same digest.
	stubborn := testkit.NewRegistry(t)
	var manifestFails int
	stubborn.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && manifestFails < 8 {
			manifestFails++
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})

	kube.Create(t, env.k8s, simpleBuild(ns, "stubborn", layerURL, stubborn, "t"))
	got = waitReady(t, ns, "stubborn")
	if got.Status.Digest != want || got.Status.Failures != 0 {
		t.Errorf("after controller retries: digest %s (clean %s), failures %d", got.Status.Digest, want, got.Status.Failures)
	}
	waitEvents(t, ns, "stubborn", "TransientError", EventPushed)
	expectEventOnce(t, ns, "stubborn", "TransientError")
}

func endpointKind(path string) string {
	switch {
	case strings.Contains(path, "/blobs/uploads"):
		return "upload"
	case strings.Contains(path, "/blobs/"):
		return "blob"
	case strings.Contains(path, "/manifests/"):
		return "manifest"
	}
	return path
}

func TestSecretOfAnotherNamespaceIsNeverRead(t *testing.T) {
	own, other := kube.Namespace(t, env.k8s), kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	ownTar := testkit.Files(t, "secret.txt", "own namespace")
	otherTar := testkit.Files(t, "secret.txt", "OTHER namespace")
	kube.Create(t, env.k8s, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "layer", Namespace: other}, Data: map[string][]byte{"l.tar": otherTar}})
	kube.Create(t, env.k8s, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "layer", Namespace: own}, Data: map[string][]byte{"l.tar": ownTar}})
	kube.Create(t, env.k8s, &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: own},
		Spec: kilnv1.ImageBuildSpec{
			Layers: []kilnv1.Layer{{Name: "s", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "layer", Key: "l.tar"}}}},
			Target: kilnv1.Target{Image: reg.Host + "/sec:1"},
		},
	})

	got := waitReady(t, own, "sec")
	if d := got.Status.Layers[0].DiffID; d != testkit.Digest(ownTar) {
		t.Errorf("layer diffID %s, want own namespace's %s (other namespace's is %s)", d, testkit.Digest(ownTar), testkit.Digest(otherTar))
	}
}

func TestManyBuildsShareLayers(t *testing.T) {
	// 50 builds in 5 namespaces share 3 public layers. Each distinct layer
	// is downloaded once; every other build (or flight of concurrent
	// builds with the same identity) reuses it only after proving access
	// with its own request: a conditional GET answered 304, for pinned
	// layers as for unpinned ones (a pinned digest alone grants nothing).
	for _, pinned := range []bool{true, false} {
		t.Run(map[bool]string{true: "pinned", false: "unpinned"}[pinned], func(t *testing.T) { manyBuildsShareLayers(t, pinned) })
	}
}

func manyBuildsShareLayers(t *testing.T, pinned bool) {
	var namespaces []string
	for range 5 {
		namespaces = append(namespaces, kube.Namespace(t, env.k8s))
	}
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	const builds = 50
	shared := []struct{ path, digest string }{}
	for i := range 3 {
		data := testkit.Gzip(t, testkit.Files(t, fmt.Sprintf("shared/%d-%t.txt", i, pinned), strings.Repeat(fmt.Sprint(i), 4096)))
		p := fmt.Sprintf("/shared-%d.tar.gz", i)
		files.Put(p, data)
		shared = append(shared, struct{ path, digest string }{p, testkit.Digest(data)})
	}
	nsOf := func(i int) string { return namespaces[i%len(namespaces)] }
	for i := range builds {
		ib := &kilnv1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("b%02d", i), Namespace: nsOf(i)},
			Spec: kilnv1.ImageBuildSpec{
				Config: &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "N", Value: fmt.Sprint(i)}}},
				Target: kilnv1.Target{Image: fmt.Sprintf("%s/many/b%02d:1", reg.Host, i)},
			},
		}
		for j, s := range shared {
			l := kilnv1.Layer{Name: fmt.Sprintf("l%d", j), Source: &kilnv1.Source{URL: files.URL + s.path}}
			if pinned {
				l.Digest = s.digest
			}
			ib.Spec.Layers = append(ib.Spec.Layers, l)
		}
		kube.Create(t, env.k8s, ib)
	}
	for i := range builds {
		waitReady(t, nsOf(i), fmt.Sprintf("b%02d", i))
	}
	for _, s := range shared {
		n, got := files.Downloads(s.path), files.Gets(s.path)
		t.Logf("%s downloaded %d times, %d requests in all, by %d builds", s.path, n, got, builds)
		if n != 1 {
			t.Errorf("%s downloaded %d times by %d builds, want exactly 1", s.path, n, builds)
		}
		// At most one request per build: the download, then one
		// conditional GET (304) per build or per flight of concurrent
		// builds; never a second download.
		if got > builds {
			t.Errorf("%s requested %d times by %d builds, want at most one request per build", s.path, got, builds)
		}
	}
}

func TestDeleteDuringBuildCancelsAndLeavesNoTempFiles(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	started := make(chan struct{})
	cancelled := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	big := testkit.Gzip(t, testkit.Files(t, "big.bin", strings.Repeat("z", 1<<20)))
	var once sync.Once
	slow := files.Handle("/slow.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		// Send part of the layer so the pipeline is writing a temp blob,
		// then hang until the client goes away.
		w.Header().Set("Content-Length", fmt.Sprint(len(big)))
		_, _ = w.Write(big[:len(big)/2])
		w.(http.Flusher).Flush()
		once.Do(func() { close(started) })
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-release:
		}
	})
	kube.Create(t, env.k8s, simpleBuild(ns, "slow", slow, reg, "slow"))
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		t.Fatal("the build never fetched the slow layer")
	}
	ib := kube.Get(t, env.k8s, ns, "slow")
	if err := env.k8s.Delete(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(30 * time.Second):
		t.Fatal("deleting the ImageBuild did not cancel its fetch")
	}
	testkit.WaitFor(t, 30*time.Second, "no temp files", func() (bool, string) {
		tmp, err := env.r.Engine.Store.TempFiles()
		return err == nil && len(tmp) == 0, fmt.Sprintf("%v %v", tmp, err)
	})
	if n := reg.Writes(); n != 0 {
		t.Errorf("%d registry writes from a cancelled build", n)
	}
}
