//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// The security scenarios of issue 10, each against the real manager, the
// real registry and independent clients: what one tenant must not obtain
// through another's build, and what must never reach an image or a status.

// TestSecurityCrossTenantCacheReuse is issue 10 §1 exactly: team-b pins the
// digest of team-a's Secret-sourced layer behind a URL that leads nowhere.
// The shared cache holds those bytes, but it saves work, it grants nothing:
// team-b must fail, push nothing and learn nothing of the secret.
func TestSecurityCrossTenantCacheReuse(t *testing.T) {
	nsA, nsB := tenantNamespace(t, "team-a"), tenantNamespace(t, "team-b")
	marker := fmt.Sprintf("TEAM-A-SECRET-%016x", rand.Uint64())
	secretTar := testkit.Tar(t, testkit.Dir("secret/"), testkit.File("secret/key", marker+"\n").WithMode(0o600))
	kube.Create(t, s.k8s, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "private-layer"},
		Data:       map[string][]byte{"layer.tar": secretTar},
	})

	done := step(t, "team-a builds from its Secret")
	a := imageBuild(nsA, "private", "security/team-a",
		kilnv1.Layer{Name: "private", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "private-layer", Key: "layer.tar"}}})
	kube.Create(t, s.k8s, a)
	readyA := waitReady(t, nsA, a.Name, 90*time.Second)
	done()
	if len(readyA.Status.Layers) != 1 {
		t.Fatalf("team-a: status.layers has %d entries, want 1: %s", len(readyA.Status.Layers), mustJSON(readyA.Status.Layers))
	}
	if got, want := readyA.Status.Layers[0].SourceDigest, kilnv1.SecretSourceDigestPrefix+"private-layer/layer.tar"; got != want {
		t.Errorf("team-a: status.layers[0].sourceDigest = %q, want %q (the sha256 of secret bytes is a confirmation oracle)", got, want)
	}
	// The DiffID is shown by design (issue 10 §1: "secret:<name>/<key> and
	// the DiffID only"); for an uncompressed tar kept as is it equals the
	// sha256 of the Secret's bytes. Nothing else may carry that sha256.
	secretDigest := testkit.Digest(secretTar)
	withoutDiffIDs := readyA.Status.DeepCopy()
	for i := range withoutDiffIDs.Layers {
		withoutDiffIDs.Layers[i].DiffID = ""
	}
	if st := mustJSON(withoutDiffIDs); strings.Contains(st, testkit.Hex(secretTar)) {
		t.Errorf("team-a: status carries the sha256 of the Secret's bytes (%s) outside diffID: %s", secretDigest, st)
	}

	done = step(t, "team-b pins team-a's digest behind a dead URL")
	b := imageBuild(nsB, "thief", "security/team-b",
		kilnv1.Layer{Name: "stolen", Source: &kilnv1.Source{URL: "http://127.0.0.1:1/x.tar"}, Digest: secretDigest})
	kube.Create(t, s.k8s, b)
	deleteAfter(t, b) // a transient failure retries forever; free the worker
	settled := waitFailed(t, nsB, b.Name, 90*time.Second)
	done()
	if c := kube.Condition(settled, kilnv1.ReadyCondition); c == nil || c.Status == metav1.ConditionTrue {
		t.Fatalf("team-b: Ready must be False, it obtained team-a's layer through the cache; conditions: %s", kube.Describe(settled))
	}
	for _, l := range settled.Status.Layers {
		if l.DiffID == testkit.Digest(secretTar) || l.SourceDigest == secretDigest {
			t.Errorf("team-b: status.layers records team-a's layer: %s", mustJSON(l))
		}
	}
	for _, c := range settled.Status.Conditions {
		if strings.Contains(c.Message, marker) {
			t.Errorf("team-b: condition %s carries team-a's secret content: %s", c.Type, c.Message)
		}
	}
	t.Logf("team-b: %s", kube.Describe(settled))
	noPushes(t, "security/team-b")
	noManifest(t, "security/team-b", "e2e")
}

// TestSecurityNoCredentialsInImage is issue 10 §2: a URL with userinfo and a
// presigned query. Neither may reach the image (manifest, config, history),
// the status, events or the manager's log, and rotating the signature must
// not change the image.
func TestSecurityNoCredentialsInImage(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	const user, pass = "kilnuser", "pass"
	layer := testkit.Gzip(t, testkit.Tar(t, testkit.Dir("signed/"), testkit.File("signed/file", "from a presigned URL\n")))
	var mu sync.Mutex
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="e2e"`)
			http.Error(w, "basic auth required", http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/path/x.tar.gz" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		_, _ = w.Write(layer)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	signedURL := func(sig string) string {
		return fmt.Sprintf("http://%s:%s@%s/path/x.tar.gz?X-Amz-Signature=%s", user, pass, host, sig)
	}

	done := step(t, "build from a URL with userinfo and signature")
	first := imageBuild(ns, "signed", "security/signed", urlLayer("signed", signedURL("SECRETSIG")))
	kube.Create(t, s.k8s, first)
	ib := waitReady(t, ns, first.Name, 90*time.Second)
	done()
	mu.Lock()
	sawSig := contains(queries, "X-Amz-Signature=SECRETSIG")
	mu.Unlock()
	if !sawSig {
		t.Fatalf("the server never answered a request carrying the signature (queries %q): the scenario tested nothing", queries)
	}

	ref := digestRef(t, ib)
	manifest := skopeoInspect(t, ref, "--raw")
	config := skopeoInspect(t, ref, "--config", "--raw")
	status := mustJSON(ib.Status)
	for what, doc := range map[string]string{
		"manifest": string(manifest), "config": string(config), "status": status,
		"events": eventNotes(t, ns), "manager log": managerLog(t),
	} {
		for _, secret := range []string{pass, "SECRETSIG"} {
			if strings.Contains(doc, secret) {
				t.Errorf("%s contains %q:\n%s", what, secret, excerpt(doc, secret))
			}
		}
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(config, &cfg); err != nil {
		t.Fatalf("parsing the config blob of %s: %v\n%s", ref, err, config)
	}
	var createdBy []string
	for _, h := range cfg.History {
		createdBy = append(createdBy, h.CreatedBy)
	}
	if !containsFragment(createdBy, `layer signed`) {
		t.Errorf("config history does not name the layer %q: created_by %q", "signed", createdBy)
	}

	done = step(t, "same layer, rotated signature")
	second := imageBuild(ns, "rotated", "security/rotated", urlLayer("signed", signedURL("OTHERSIG")))
	kube.Create(t, s.k8s, second)
	rotated := waitReady(t, ns, second.Name, 90*time.Second)
	done()
	if rotated.Status.Digest != ib.Status.Digest {
		t.Errorf("rotating the URL's signature changed the image: manifest %s, then %s", ib.Status.Digest, rotated.Status.Digest)
	}
}

// TestSecurityHeadersFromNotForwardedAcrossHosts is issue 10 §3: server A
// redirects to server B on another port; B hands out the layer only to a
// request carrying the tenant's X-Api-Token. The token must not follow the
// redirect, nor may a Referer holding A's query, so the build stalls on B's
// 401.
func TestSecurityHeadersFromNotForwardedAcrossHosts(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	token := fmt.Sprintf("tok-%016x", rand.Uint64())
	layer := testkit.Gzip(t, testkit.Tar(t, testkit.File("token-only", "only with the token\n")))

	var mu sync.Mutex
	var seenA, seenB []http.Header
	srvB := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seenB = append(seenB, r.Header.Clone())
		mu.Unlock()
		if r.Header.Get("X-Api-Token") == "" {
			http.Error(w, "X-Api-Token required", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(layer)
	}))
	t.Cleanup(srvB.Close)
	srvA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seenA = append(seenA, r.Header.Clone())
		mu.Unlock()
		http.Redirect(w, r, srvB.URL+"/layer.tar.gz", http.StatusFound)
	}))
	t.Cleanup(srvA.Close)

	kube.Create(t, s.k8s, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-token"},
		Data:       map[string][]byte{"X-Api-Token": []byte(token)},
	})

	ib := imageBuild(ns, "redirected", "security/redirected", kilnv1.Layer{Name: "redirected", Source: &kilnv1.Source{
		URL: srvA.URL + "/layer.tar.gz?sig=REFERERSIG", HeadersFrom: &kilnv1.LocalObjectReference{Name: "api-token"},
	}})
	kube.Create(t, s.k8s, ib)
	deleteAfter(t, ib)
	done := step(t, "redirect to another host without the token")
	stalled := waitFailed(t, ns, ib.Name, 60*time.Second)
	done()

	// A 401 is an external problem (a token can be fixed): Ready=False with
	// the reason and retried, not Stalled.
	c := kube.Condition(stalled, kilnv1.ReadyCondition)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Unauthorized" {
		t.Errorf("want Ready=False reason Unauthorized (B's 401); conditions: %s", kube.Describe(stalled))
	}
	if st := kube.Condition(stalled, kilnv1.StalledCondition); st != nil && st.Status == metav1.ConditionTrue {
		t.Errorf("a 401 must not stall; conditions: %s", kube.Describe(stalled))
	}
	if c != nil && strings.Contains(c.Message, token) {
		t.Errorf("the Ready message carries the token: %s", c.Message)
	}
	t.Logf("conditions: %s", kube.Describe(stalled))
	mu.Lock()
	defer mu.Unlock()
	if len(seenA) == 0 || seenA[0].Get("X-Api-Token") != token {
		t.Fatalf("server A never received the X-Api-Token from headersFrom (requests %v): the scenario tested nothing", seenA)
	}
	if len(seenB) == 0 {
		t.Fatalf("server B was never asked: the redirect was not followed")
	}
	for i, h := range seenB {
		if v := h.Get("X-Api-Token"); v != "" {
			t.Errorf("server B request %d carried X-Api-Token %q across the redirect", i, v)
		}
		if v := h.Get("Referer"); v != "" {
			t.Errorf("server B request %d carried Referer %q", i, v)
		}
	}
	noPushes(t, "security/redirected")
}

// TestSecurityCLIRefusesInvalidSpec is issue 10 §8: `kiln build -f` refuses
// what the API server refuses (two layers named app, a layer named Not_DNS)
// with the server's message, before anything is fetched or pushed.
func TestSecurityCLIRefusesInvalidSpec(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	repo := "security/cli-invalid"
	okURL := s.serveFile(t, "security/cli-ok.tar.gz", testkit.Gzip(t, testkit.Tar(t, testkit.File("ok", "fine\n"))))
	ib := imageBuild(ns, "invalid", repo,
		urlLayer("app", okURL), urlLayer("app", okURL), urlLayer("Not_DNS", okURL))

	// The reference: what the API server says about the same object.
	apiErr := s.k8s.Create(context.Background(), ib.DeepCopy())
	var status apierrors.APIStatus
	if !errors.As(apiErr, &status) || !apierrors.IsInvalid(apiErr) {
		t.Fatalf("the API server accepted or failed otherwise on the invalid ImageBuild: %v", apiErr)
	}
	const dup = "layer names must be unique"
	if !strings.Contains(apiErr.Error(), dup) {
		t.Fatalf("the API server's refusal does not say %q: %v", dup, apiErr)
	}

	code, stderr := runKilnBuild(t, ib)
	if code == 0 {
		t.Fatalf("kiln build -f accepted the invalid spec; stderr:\n%s", stderr)
	}
	if !strings.Contains(stderr, dup) {
		t.Errorf("kiln build -f exit %d, stderr lacks the API server's %q:\n%s", code, dup, stderr)
	}
	for _, cause := range status.Status().Details.Causes {
		if !strings.Contains(stderr, cause.Message) {
			t.Errorf("kiln build -f stderr lacks the API server's cause %s: %q\nstderr:\n%s", cause.Field, cause.Message, stderr)
		}
	}
	t.Logf("kiln build -f exit %d: %s", code, strings.TrimSpace(stderr))
	noPushes(t, repo)
	noManifest(t, repo, "e2e")
}

// tenantNamespace creates a namespace named after the tenant, unique to the run.
func tenantNamespace(t testing.TB, tenant string) string {
	t.Helper()
	name := fmt.Sprintf("e2e-sec-%s-%04x", tenant, rand.IntN(1<<16))
	if err := s.k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

// waitFailed waits until the build shows a failure: Stalled=True, or a
// failed attempt recorded (Reconciling with failures > 0). Ready=True is a
// failure of the test at once.
func waitFailed(t testing.TB, ns, name string, timeout time.Duration) *kilnv1.ImageBuild {
	t.Helper()
	return waitFor(t, ns, name, timeout, "failed", func(ib *kilnv1.ImageBuild) (bool, error) {
		if c := kube.Condition(ib, kilnv1.ReadyCondition); c != nil && c.Status == metav1.ConditionTrue {
			return false, fmt.Errorf("became Ready (status.layers %s)", mustJSON(ib.Status.Layers))
		}
		if c := kube.Condition(ib, kilnv1.StalledCondition); c != nil && c.Status == metav1.ConditionTrue {
			return true, nil
		}
		return ib.Status.Failures > 0, nil
	})
}

// noManifest fails when the registry answers a manifest for repo:tag.
func noManifest(t testing.TB, repo, tag string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, "http://"+s.reg.Addr()+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", manifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("asking the registry for %s:%s: %v", repo, tag, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("registry holds a manifest for %s:%s (HEAD answered %d), want 404", repo, tag, resp.StatusCode)
	}
}

// skopeoInspect prints what skopeo reads of ref (stdout only: the JSON).
func skopeoInspect(t testing.TB, ref string, flags ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"inspect", "--tls-verify=false"}, flags...)
	args = append(args, "docker://"+ref)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "skopeo", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// eventNotes is every event note recorded in ns, one a line.
func eventNotes(t testing.TB, ns string) string {
	t.Helper()
	var list eventsv1.EventList
	if err := s.k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing events in %s: %v", ns, err)
	}
	var b strings.Builder
	for _, e := range list.Items {
		fmt.Fprintf(&b, "%s %s: %s\n", e.Reason, e.Action, e.Note)
	}
	return b.String()
}

func managerLog(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(s.mgr.logPath)
	if err != nil {
		t.Fatalf("reading the manager log: %v", err)
	}
	return string(b)
}

// excerpt is the text around the first occurrence of what, for a failure message.
func excerpt(doc, what string) string {
	i := strings.Index(doc, what)
	lo, hi := max(0, i-200), min(len(doc), i+len(what)+200)
	return doc[lo:hi]
}

func containsFragment(list []string, frag string) bool {
	for _, v := range list {
		if strings.Contains(v, frag) {
			return true
		}
	}
	return false
}

// runKilnBuild runs `bin/kiln build -f` on ib with a cache and docker
// config of its own, and returns the exit code and stderr.
func runKilnBuild(t testing.TB, ib *kilnv1.ImageBuild) (int, string) {
	t.Helper()
	doc := ib.DeepCopy()
	doc.TypeMeta = metav1.TypeMeta{APIVersion: kilnv1.GroupVersion.String(), Kind: "ImageBuild"}
	doc.ObjectMeta = metav1.ObjectMeta{Name: ib.Name, Namespace: ib.Namespace}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	spec := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(spec, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.root, "bin", "kiln"), "build", "-f", spec,
		"--cache-dir", filepath.Join(dir, "cache"), "--progress=false")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(dir, "docker"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stderr.String()
	default:
		t.Fatalf("running kiln build: %v\nstderr: %s", err, stderr.String())
		return 0, ""
	}
}
