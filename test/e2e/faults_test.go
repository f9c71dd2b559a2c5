//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// planDigest computes the manifest digest of ib with `kiln plan`: a
// separate process, an empty cache of its own, nothing pushed. It is the
// fault-free reference the faulty runs must reproduce.
func planDigest(t testing.TB, ib *kilnv1.ImageBuild) string {
	t.Helper()
	defer step(t, "kiln plan (fault-free reference digest)")()
	doc := ib.DeepCopy()
	doc.TypeMeta = metav1.TypeMeta{APIVersion: kilnv1.GroupVersion.String(), Kind: "ImageBuild"}
	doc.ObjectMeta = metav1.ObjectMeta{Name: ib.Name, Namespace: ib.Namespace}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(s.work, "plan-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	spec := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(spec, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(s.root, "bin", "kiln"), "plan", "-f", spec, "--cache-dir", filepath.Join(dir, "cache"), "-o", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var planned kilnv1.ImageBuild
	if jerr := json.Unmarshal(out, &planned); jerr != nil || planned.Status.Digest == "" {
		t.Fatalf("kiln plan: %v / %v\nstdout: %s\nstderr: %s", err, jerr, out, stderr.String())
	}
	return planned.Status.Digest
}

// viaRegistry rewrites repo@digest behind a proxy to the registry itself, so
// the independent clients read what the registry really holds.
func viaRegistry(ref, proxyAddr string) string {
	return strings.Replace(ref, proxyAddr, s.reg.Addr(), 1)
}

// deleteAfter removes ImageBuilds whose target is a proxy that closes with
// the test, so restarted managers do not keep probing a dead address.
func deleteAfter(t testing.TB, ibs ...*kilnv1.ImageBuild) {
	t.Cleanup(func() {
		for _, ib := range ibs {
			_ = s.k8s.Delete(context.Background(), ib.DeepCopy())
		}
	})
}

// A seeded schedule of 500/503, 429 + Retry-After, connection resets in the
// middle of blob uploads and delays, in front of the registry: the build
// still ends Ready with the fault-free digest, umoci unpacks it, the tags
// point at it and no manifest references a missing blob.
func TestRegistryFaults(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	proxy, err := startProxy(s.reg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.close()
	seed := uint64(20240101)
	if v := os.Getenv("KILN_E2E_SEED"); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("KILN_E2E_SEED: %v", err)
		}
	}
	t.Logf("fault schedule seed %d (set KILN_E2E_SEED to replay another)", seed)

	rootfs := busyboxRootfs(t)
	app := appLayer(t)
	layers := []kilnv1.Layer{urlLayer("rootfs", s.serveFile(t, "faults/rootfs.tar.gz", testkit.Gzip(t, rootfs)))}
	tars := [][]byte{rootfs}
	for i := 0; i < 3; i++ {
		data := testkit.Tar(t, testkit.Dir("data/"), testkit.File(fmt.Sprintf("data/blob-%d", i), string(noise(uint64(300+i), 4<<20))))
		layers = append(layers, urlLayer(fmt.Sprintf("data-%d", i), s.serveFile(t, fmt.Sprintf("faults/data-%d.tar", i), data)))
		tars = append(tars, data)
	}
	layers = append(layers, urlLayer("app", s.serveFile(t, "faults/app.tar.zst", testkit.Zstd(t, app))))
	tars = append(tars, app)
	var diffIDs []string
	for _, tb := range tars {
		diffIDs = append(diffIDs, testkit.Digest(tb))
	}

	ib := imageBuild(ns, "faulty", "faults/app", layers...)
	ib.Spec.Target.Image = proxy.addr + "/faults/app:e2e"
	ib.Spec.Target.Tags = []string{"latest", "stable"}
	ib.Spec.Config = &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "FAULTS", Value: "survived"}}}
	want := planDigest(t, ib)

	proxy.setPlan(&faultPlan{
		seed: seed, p500: 0.08, p503: 0.08, p429: 0.06, pReset: 0.25, pDelay: 0.2,
		maxDelay: 400 * time.Millisecond, maxFaults: 40, maxInARow: 2,
		forced: []string{"503", "429", "500"}, resetFirstUpload: true,
	})
	done := step(t, "build through the fault proxy")
	kube.Create(t, s.k8s, ib)
	deleteAfter(t, ib)
	ib = waitReady(t, ns, "faulty", 6*time.Minute)
	done()
	stats := proxy.stats()
	proxy.setPlan(nil)
	t.Logf("proxy actions: %v", stats)
	for _, a := range []string{"500", "503", "429", "reset"} {
		if stats[a] == 0 {
			t.Errorf("the schedule injected no %q fault; the scenario proved less than it claims (actions %v)", a, stats)
		}
	}
	if ib.Status.Digest != want {
		t.Errorf("digest through faults %s, fault-free plan %s", ib.Status.Digest, want)
	}
	for _, tag := range []string{"e2e", "latest", "stable"} {
		if got := tagDigest(t, "faults/app", tag); got != ib.Status.Digest {
			t.Errorf("tag %s points at %s, want %s", tag, got, ib.Status.Digest)
		}
	}
	checkImage(t, viaRegistry(digestRef(t, ib), proxy.addr), wantImage{
		tree: expectedTree(t, tars...), env: []string{"FAULTS=survived"}, os: "linux", arch: "amd64", diffIDs: diffIDs,
	})
	checkRegistryIntegrity(t)
}

// tagDigest asks the registry directly which manifest a tag points at.
func tagDigest(t testing.TB, repo, tag string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, "http://"+s.reg.Addr()+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", manifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("Docker-Content-Digest")
}

// SIGKILL the manager in the middle of a large blob upload (throttled by the
// proxy so "the middle" is certain), start it again: the build completes
// with the fault-free digest and the cache holds no temp files.
func TestManagerKilledMidUpload(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	proxy, err := startProxy(s.reg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.close()
	done := step(t, "generate 129 MiB layer")
	path := filepath.Join(s.filesDir, "crash", "layer.tar")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	wantTree, diffID := writeBigLayer(t, path, 129<<20, 7)
	defer os.Remove(path)
	done()

	ib := imageBuild(ns, "crash", "crash/app", urlLayer("big", s.files.URL("crash/layer.tar")))
	ib.Spec.Target.Image = proxy.addr + "/crash/app:e2e"
	want := planDigest(t, ib)

	const rate = 4 << 20 // bytes/s: the ~45 MB blob takes ~10 s to upload
	proxy.throttle.Store(rate)
	kube.Create(t, s.k8s, ib)
	deleteAfter(t, ib)
	done = step(t, "wait for the upload to be in flight")
	deadline := time.Now().Add(3 * time.Minute)
	for proxy.uploaded.Load() < 8<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("no blob upload in flight after 3 minutes (%d bytes); manager log:\n%s", proxy.uploaded.Load(), s.mgr.tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	done()
	if got := kube.Get(t, s.k8s, ns, "crash"); kube.Condition(got, kilnv1.ReadyCondition) != nil && kube.Condition(got, kilnv1.ReadyCondition).Status == metav1.ConditionTrue {
		t.Fatalf("build finished before the kill; the throttle did not hold it mid-upload")
	}
	t.Logf("SIGKILL with %d MiB of the blob uploaded", proxy.uploaded.Load()>>20)
	cache := s.mgr.cfg.cacheDir
	if err := s.restartManager(context.Background(), s.mgr.cfg, true); err != nil {
		t.Fatal(err)
	}
	proxy.throttle.Store(0)
	done = step(t, "restarted manager finishes the build")
	ib = waitReady(t, ns, "crash", 5*time.Minute)
	done()
	if ib.Status.Digest != want {
		t.Errorf("digest after the crash %s, fault-free plan %s", ib.Status.Digest, want)
	}
	if left, err := tempLeftovers(cache); err != nil || len(left) > 0 {
		t.Errorf("cache %s has temp leftovers after the restart: %v %v", cache, left, err)
	}
	checkImage(t, viaRegistry(digestRef(t, ib), proxy.addr), wantImage{tree: wantTree, os: "linux", arch: "amd64", diffIDs: []string{diffID}})
	checkRegistryIntegrity(t)
}

// The registry endpoint refuses connections for a minute: the build waits
// (Reconciling=True with the error, never Stalled) and finishes when it is
// back. The proxy is the registry's address for this build, so closing its
// port is the registry going down as kiln sees it.
func TestRegistryDownForAMinute(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	proxy, err := startProxy(s.reg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.close()
	rootfs, err := sandbox.RootfsTar()
	if err != nil {
		t.Fatal(err)
	}
	ib := imageBuild(ns, "waits", "down/app", urlLayer("rootfs", s.serveFile(t, "down/rootfs.tar.xz", testkit.Xz(t, rootfs))))
	ib.Spec.Target.Image = proxy.addr + "/down/app:e2e"
	if err := proxy.down(); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	kube.Create(t, s.k8s, ib)
	deleteAfter(t, ib)
	got := waitFor(t, ns, "waits", 2*time.Minute, "Reconciling with the registry's error", func(ib *kilnv1.ImageBuild) (bool, error) {
		if c := kube.Condition(ib, kilnv1.StalledCondition); c != nil && c.Status == metav1.ConditionTrue {
			return false, fmt.Errorf("stalled on a transient outage: %s", c.Message)
		}
		// Reconciling says it retries; Ready carries the error.
		c, ready := kube.Condition(ib, kilnv1.ReconcilingCondition), kube.Condition(ib, kilnv1.ReadyCondition)
		return ib.Status.Failures > 0 && c != nil && c.Status == metav1.ConditionTrue &&
			ready != nil && strings.Contains(ready.Message, "connection refused"), nil
	})
	t.Logf("after %s: %s", time.Since(downAt).Round(time.Second), kube.Condition(got, kilnv1.ReconcilingCondition).Message)
	for time.Since(downAt) < time.Minute {
		cur := kube.Get(t, s.k8s, ns, "waits")
		if c := kube.Condition(cur, kilnv1.StalledCondition); c != nil && c.Status == metav1.ConditionTrue {
			t.Fatalf("stalled while the registry was down: %s", c.Message)
		}
		if c := kube.Condition(cur, kilnv1.ReadyCondition); c != nil && c.Status == metav1.ConditionTrue {
			t.Fatalf("Ready while the registry was down?")
		}
		time.Sleep(time.Second)
	}
	failures := kube.Get(t, s.k8s, ns, "waits").Status.Failures
	if err := proxy.up(); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	ib = waitReady(t, ns, "waits", 3*time.Minute)
	t.Logf("down %s, %d failed attempts, Ready %s after the registry came back",
		upAt.Sub(downAt).Round(time.Second), failures, time.Since(upAt).Round(100*time.Millisecond))
	checkImage(t, viaRegistry(digestRef(t, ib), proxy.addr), wantImage{
		tree: expectedTree(t, rootfs), os: "linux", arch: "amd64", diffIDs: []string{testkit.Digest(rootfs)},
	})
}

// The same ImageBuild built by two separate manager processes, each with an
// empty cache (and different GOMAXPROCS), gives the same digests.
func TestReproducibleAcrossManagers(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	rootfs, err := sandbox.RootfsTar()
	if err != nil {
		t.Fatal(err)
	}
	app := appLayer(t)
	data := testkit.Tar(t, testkit.Dir("data/"), testkit.File("data/text", string(pseudoText(9, 3<<20))))
	layers := []kilnv1.Layer{
		urlLayer("rootfs", s.serveFile(t, "repro/rootfs.tar.xz", testkit.Xz(t, rootfs))),
		{Name: "app", Source: &kilnv1.Source{URL: s.serveFile(t, "repro/app.tar.gz", testkit.Gzip(t, app))}, Normalize: kilnv1.NormalizeReproducible},
		urlLayer("data", s.serveFile(t, "repro/data.tar", data)),
	}
	main := s.mgr.cfg
	defer func() {
		if err := s.restartManager(context.Background(), main, false); err != nil {
			t.Errorf("restarting the main manager: %v", err)
		}
	}()
	runs := []struct {
		name string
		env  []string
	}{{"a", []string{"GOMAXPROCS=2"}}, {"b", []string{"GOMAXPROCS=1"}}}
	var built []*kilnv1.ImageBuild
	for _, r := range runs {
		cfg := managerConfig{cacheDir: filepath.Join(s.work, "cache-repro-"+r.name), env: r.env}
		done := step(t, "manager run "+r.name+" ("+strings.Join(r.env, " ")+", empty cache)")
		if err := s.restartManager(context.Background(), cfg, false); err != nil {
			t.Fatal(err)
		}
		ib := imageBuild(ns, "repro-"+r.name, "repro/"+r.name, layers...)
		ib.Spec.Config = &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "PATH", Value: "/app/bin:/bin"}}, Entrypoint: []string{"/app/bin/server"}}
		kube.Create(t, s.k8s, ib)
		built = append(built, waitReady(t, ns, ib.Name, 3*time.Minute))
		done()
	}
	a, b := built[0].Status, built[1].Status
	if a.Digest != b.Digest || a.ConfigDigest != b.ConfigDigest {
		t.Errorf("two manager runs disagree: digest %s vs %s, config %s vs %s", a.Digest, b.Digest, a.ConfigDigest, b.ConfigDigest)
	}
	for i := range a.Layers {
		if a.Layers[i].Digest != b.Layers[i].Digest || a.Layers[i].DiffID != b.Layers[i].DiffID {
			t.Errorf("layer %s: %s/%s vs %s/%s", a.Layers[i].Name, a.Layers[i].Digest, a.Layers[i].DiffID, b.Layers[i].Digest, b.Layers[i].DiffID)
		}
	}
	t.Logf("both runs: %s", a.Digest)
	checkImage(t, digestRef(t, built[1]), wantImage{
		tree: expectedTree(t, rootfs, app, data), env: []string{"PATH=/app/bin:/bin"}, entrypoint: []string{"/app/bin/server"},
		os: "linux", arch: "amd64",
	})
}
