package controllers

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// failedWith waits until the ImageBuild has failed at least once with a
// message containing fragment and is not Ready, and returns it.
func failedWith(t *testing.T, ns, name, fragment string) *kilnv1.ImageBuild {
	t.Helper()
	var ib *kilnv1.ImageBuild
	testkit.WaitFor(t, 60*time.Second, ns+"/"+name+" failed with "+fragment, func() (bool, string) {
		ib = kube.Get(t, env.k8s, ns, name)
		ready := kube.Condition(ib, kilnv1.ReadyCondition)
		return ib.Status.Failures > 0 && ready != nil && ready.Status == metav1.ConditionFalse &&
			strings.Contains(ready.Message, fragment), kube.Describe(ib)
	})
	return ib
}

// manifestStatus is the registry's answer to a HEAD of repo:tag.
func manifestStatus(t *testing.T, reg *testkit.Registry, repo, tag string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodHead, reg.URL+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Issue 10, section 1: team-a builds from its own Secret; team-b, which
// cannot read that Secret, pins the digest of its bytes on a URL that leads
// nowhere. team-b must not be served team-a's cached layer.
func TestPinnedDigestOfAnotherNamespacesSecretIsNotServed(t *testing.T) {
	teamA, teamB := kube.Namespace(t, env.k8s), kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	secretTar := testkit.Gzip(t, testkit.Files(t, "etc/key.pem", "team-a private key"))
	kube.Create(t, env.k8s, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "layer", Namespace: teamA}, Data: map[string][]byte{"l.tar.gz": secretTar}})
	kube.Create(t, env.k8s, &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: teamA},
		Spec: kilnv1.ImageBuildSpec{
			Layers: []kilnv1.Layer{{Name: "key", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "layer", Key: "l.tar.gz"}}}},
			Target: kilnv1.Target{Image: reg.Host + "/team-a/app:1"},
		},
	})

	a := waitReady(t, teamA, "app")
	if got := a.Status.Layers[0].SourceDigest; got != "secret:layer/l.tar.gz" {
		t.Errorf("team-a's status shows sourceDigest %q, want secret:layer/l.tar.gz", got)
	}

	kube.Create(t, env.k8s, &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "steal", Namespace: teamB},
		Spec: kilnv1.ImageBuildSpec{
			Layers: []kilnv1.Layer{{Name: "key", Source: &kilnv1.Source{URL: "http://127.0.0.1:1/x.tar"}, Digest: testkit.Digest(secretTar)}},
			Target: kilnv1.Target{Image: reg.Host + "/team-b/stolen:1"},
		},
	})

	b := failedWith(t, teamB, "steal", "connection refused")
	if kube.Ready(b) || len(b.Status.Layers) != 0 || b.Status.Digest != "" {
		t.Errorf("team-b's build has a result: %s, layers %v", kube.Describe(b), b.Status.Layers)
	}
	if code := manifestStatus(t, reg, "team-b/stolen", "1"); code != http.StatusNotFound {
		t.Errorf("team-b's target answers %d for its manifest, want 404 (nothing pushed)", code)
	}
}

// Two concurrent builds of one unpinned URL, in two namespaces, one with a
// headersFrom Authorization and one without, against a server that requires
// the header: they never share the fetch, so the one without fails, and
// every attempt of it asks the server itself.
func TestConcurrentBuildsShareAFetchOnlyWithTheSameHeaders(t *testing.T) {
	withHeader, without := kube.Namespace(t, env.k8s), kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	layer := testkit.Gzip(t, testkit.Files(t, "private.txt", "only for token holders"))
	var mu sync.Mutex
	var anonymous, authorized int
	anonymousSeen := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t0ken" {
			mu.Lock()
			anonymous++
			mu.Unlock()
			once.Do(func() { close(anonymousSeen) })
			http.Error(w, "token required", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		authorized++
		mu.Unlock()
		// Keep the authorized fetch in flight until the other build has
		// asked for itself (or has had every chance to join this one).
		select {
		case <-anonymousSeen:
		case <-time.After(20 * time.Second):
		}
		_, _ = w.Write(layer)
	}))
	t.Cleanup(srv.Close)

	kube.Create(t, env.k8s, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "token", Namespace: withHeader}, StringData: map[string]string{"Authorization": "Bearer t0ken"}})
	mk := func(ns string, headers *kilnv1.LocalObjectReference) {
		kube.Create(t, env.k8s, &kilnv1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
			Spec: kilnv1.ImageBuildSpec{
				Layers: []kilnv1.Layer{{Name: "l", Source: &kilnv1.Source{URL: srv.URL + "/private.tar.gz", HeadersFrom: headers}}},
				Target: kilnv1.Target{Image: reg.Host + "/" + ns + "/app:1"},
			},
		})

	}
	mk(withHeader, &kilnv1.LocalObjectReference{Name: "token"})
	testkit.WaitFor(t, 30*time.Second, "the authorized fetch to start", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return authorized > 0, "no authorized request yet"
	})
	mk(without, nil)

	b := failedWith(t, without, "app", "401")
	// Unauthorized depends on the outside (a token may be added): retried,
	// never Stalled (issue 11).
	if c := kube.Condition(b, kilnv1.ReadyCondition); c.Reason != "Unauthorized" || kube.Condition(b, kilnv1.StalledCondition) != nil {
		t.Errorf("build without the header: %s, want Ready=False Unauthorized, not Stalled", kube.Describe(b))
	}
	waitReady(t, withHeader, "app")
	// Retries after the authorized layer is cached still ask the server
	// themselves and fail: the cache never serves the build without the
	// header.
	failures := kube.Get(t, env.k8s, without, "app").Status.Failures
	testkit.WaitFor(t, 30*time.Second, "a retry after the authorized build", func() (bool, string) {
		got := kube.Get(t, env.k8s, without, "app")
		c := kube.Condition(got, kilnv1.ReadyCondition)
		return got.Status.Failures > failures && c.Reason == "Unauthorized", kube.Describe(got)
	})
	if code := manifestStatus(t, reg, without+"/app", "1"); code != http.StatusNotFound {
		t.Errorf("the build without the header pushed (manifest HEAD %d)", code)
	}
	mu.Lock()
	defer mu.Unlock()
	if anonymous < 2 {
		t.Errorf("server saw %d requests without the header, want one per attempt (at least 2)", anonymous)
	}
}
