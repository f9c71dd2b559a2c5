package main

// Capacity figures for sizing shards (README "Scaling out"), as Go
// benchmarks so they run on the machine that will host the managers:
//
//	go test -run '^$' -bench Capacity -benchtime 3x ./test/bench
//
// Both need the CNCF distribution registry (`make registry`, or
// KILN_REGISTRY=path); the reconcile benchmark also needs the envtest
// control plane (`make envtest-assets`, or KUBEBUILDER_ASSETS). The
// registry and the API server run in their own processes, so the CPU
// figures (getrusage of this process) are kiln's side only: engine,
// manager, client and the local file server the sources come from.

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	kgzip "github.com/klauspost/compress/gzip"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/controllers"
	"github.com/kiln-build/kiln/internal/engine"
	kregistry "github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/testkit/kube"
)

// BenchmarkCapacityBuild builds scratch + the ~300 MiB rootfs of `make
// bench` (test/bench/inputs.go, deterministic) into a new repository per
// op, with the engine the manager runs:
//   - cold-tar, cold-gz: empty cache; the layer is fetched over HTTP,
//     decoded (gz), hashed, gzip-encoded and uploaded;
//   - cached: the same layer already in the blob cache (another
//     ImageBuild built it): nothing is fetched or encoded again.
//
// builds/min/core = 60 / (CPU seconds per build).
func BenchmarkCapacityBuild(b *testing.B) {
	ctx := context.Background()
	dir := capacityInputs(b)
	reg := capacityRegistry(b)
	files := httptest.NewServer(http.FileServer(http.Dir(dir)))
	b.Cleanup(files.Close)
	size := fileSize(b, filepath.Join(dir, rootfsTar))

	build := func(b *testing.B, e *engine.Engine, input, repo string) {
		b.Helper()
		ib := &kilnv1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: "capacity", Namespace: "default"},
			Spec: kilnv1.ImageBuildSpec{
				Base:   &kilnv1.Base{Image: "scratch"},
				Layers: []kilnv1.Layer{{Name: "rootfs", Source: &kilnv1.Source{URL: files.URL + "/" + input}}},
				Target: kilnv1.Target{Image: reg.addr + "/" + repo + ":1"},
			},
		}
		res, err := e.Build(ctx, ib, engine.Inputs{}, engine.Options{})
		if err != nil {
			b.Fatalf("building %s: %v", repo, err)
		}
		if res.UpToDate {
			b.Fatalf("%s: up to date, nothing was pushed", repo)
		}
	}
	newEngine := func(b *testing.B) *engine.Engine {
		e, err := engine.NewEngine(engine.Config{CacheDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		return e
	}
	for _, input := range []string{rootfsTar, rootfsTar + ".gz"} {
		name := "cold-" + strings.TrimPrefix(filepath.Ext(input), ".")
		b.Run(name, func(b *testing.B) {
			var cpu time.Duration
			for range b.N {
				b.StopTimer()
				e := newEngine(b)
				b.StartTimer()
				c0 := processCPU(b)
				build(b, e, input, fmt.Sprintf("capacity/%s-%d", name, repoSeq.Add(1)))
				cpu += processCPU(b) - c0
			}
			reportBuilds(b, cpu, size)
		})
	}
	b.Run("cached", func(b *testing.B) {
		b.StopTimer()
		e := newEngine(b)
		build(b, e, rootfsTar+".gz", fmt.Sprintf("capacity/warm-%d", repoSeq.Add(1)))
		b.StartTimer()
		var cpu time.Duration
		for range b.N {
			c0 := processCPU(b)
			build(b, e, rootfsTar+".gz", fmt.Sprintf("capacity/cached-%d", repoSeq.Add(1)))
			cpu += processCPU(b) - c0
		}
		reportBuilds(b, cpu, size)
	})
}

// repoSeq names a new repository per build: Go runs a benchmark once with
// b.N = 1 before the measured run, which must not find its image pushed.
var repoSeq atomic.Int64

func reportBuilds(b *testing.B, cpu time.Duration, size int64) {
	perOp := cpu.Seconds() / float64(b.N)
	b.ReportMetric(perOp, "cpu-s/op")
	b.ReportMetric(60/perOp, "builds/min/core")
	b.ReportMetric(float64(size)/(1<<20)/perOp, "MiB/cpu-s")
}

// BenchmarkCapacityNoopReconcile measures what a manager restart, a
// failover or an interval re-verification costs: every ImageBuild is up to
// date and the manager, started fresh, reconciles each once (read from the
// cache, fingerprint its inputs, one HEAD that the target still holds the
// digest, no write). CAPACITY_OBJECTS ImageBuilds (default 300) are built
// first by another manager. Per op, a new manager starts and is timed until
// it has sent one HEAD per ImageBuild; a manifest PUT fails the benchmark.
func BenchmarkCapacityNoopReconcile(b *testing.B) {
	ctrl.SetLogger(logr.Discard())
	ctx := context.Background()
	n := envInt(b, "CAPACITY_OBJECTS", 300)
	reg := capacityRegistry(b)
	cfg, k8s := kube.StartControlPlane(b, filepath.Join("..", ".."))
	const ns = "capacity"
	create := func(obj client.Object) {
		if err := k8s.Create(ctx, obj); err != nil {
			b.Fatalf("creating %s: %v", obj.GetName(), err)
		}
	}
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: ns}, BinaryData: map[string][]byte{"app.tar": smallTar(b)}})
	for i := range n {
		create(&kilnv1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ib-%04d", i), Namespace: ns},
			Spec: kilnv1.ImageBuildSpec{
				Layers: []kilnv1.Layer{{Name: "app", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "files", Key: "app.tar"}}}},
				Target: kilnv1.Target{Image: fmt.Sprintf("%s/noop/ib-%04d:1", reg.addr, i)},
			},
		})
	}
	cacheDir := b.TempDir()
	run := func(tr http.RoundTripper) (stop func()) {
		mctx, cancel := context.WithCancel(ctx)
		mgr, _, err := controllers.NewManager(mctx, cfg, controllers.ManagerOptions{
			MetricsBindAddress:           "0",
			HealthProbeBindAddress:       "0",
			MaxConcurrentBuilds:          4,
			SkipControllerNameValidation: true,
			Engine:                       engine.Config{CacheDir: cacheDir, Registry: kregistry.Options{Transport: tr}},
		})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- mgr.Start(mctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				b.Errorf("manager: %v", err)
			}
		}
	}
	stop := run(http.DefaultTransport)
	waitAllReady(b, k8s, ns, n)
	stop()

	var cpu time.Duration
	var steady []float64
	b.ResetTimer()
	for range b.N {
		heads := &headCounter{next: http.DefaultTransport, want: n, done: make(chan struct{})}
		c0 := processCPU(b)
		stop := run(heads)
		select {
		case <-heads.done:
		case <-time.After(10 * time.Minute):
			b.Fatalf("only %d of %d ImageBuilds re-verified", heads.count(), n)
		}
		cpu += processCPU(b) - c0
		b.StopTimer()
		stop()
		if heads.puts > 0 {
			b.Fatalf("%d manifests pushed: the ImageBuilds were not up to date", heads.puts)
		}
		if span := heads.last.Sub(heads.first).Seconds(); span > 0 {
			steady = append(steady, float64(n-1)/span)
		}
		b.StartTimer()
	}
	b.StopTimer()
	perObj := cpu.Seconds() / float64(b.N*n)
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "reconciles/s")
	b.ReportMetric(1/perObj, "reconciles/cpu-s")
	if len(steady) > 0 {
		var sum float64
		for _, s := range steady {
			sum += s
		}
		b.ReportMetric(sum/float64(len(steady)), "steady-reconciles/s")
	}
}

// headCounter counts the manifest HEADs (the no-op reconcile's target
// check) and closes done at the want-th; it also counts manifest PUTs.
type headCounter struct {
	next        http.RoundTripper
	want        int
	done        chan struct{}
	mu          sync.Mutex
	heads, puts int
	first, last time.Time
}

func (h *headCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/manifests/") {
		h.mu.Lock()
		switch r.Method {
		case http.MethodHead:
			h.heads++
			now := time.Now()
			if h.heads == 1 {
				h.first = now
			}
			h.last = now
			if h.heads == h.want {
				close(h.done)
			}
		case http.MethodPut:
			h.puts++
		}
		h.mu.Unlock()
	}
	return h.next.RoundTrip(r)
}

func (h *headCounter) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.heads
}

func waitAllReady(b *testing.B, c client.Client, ns string, n int) {
	b.Helper()
	deadline := time.Now().Add(15 * time.Minute)
	for {
		var list kilnv1.ImageBuildList
		if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		ready := 0
		for i := range list.Items {
			if engine.IsReady(&list.Items[i]) {
				ready++
			}
		}
		if ready == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d ImageBuilds Ready", ready, n)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// capacityInputs generates rootfs.tar and rootfs.tar.gz (gzip -6) once
// under bin/bench/capacity-<generatorVersion>.
func capacityInputs(b *testing.B) string {
	b.Helper()
	dir := filepath.Join("..", "..", "bin", "bench", "capacity-"+generatorVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	tarPath := filepath.Join(dir, rootfsTar)
	if !exists(tarPath) {
		if err := writeFileAtomic(tarPath, func(w io.Writer) error { return writeRootfs(w, false) }); err != nil {
			b.Fatal(err)
		}
	}
	if gz := tarPath + ".gz"; !exists(gz) {
		err := writeFileAtomic(gz, func(w io.Writer) error {
			return encodeInProcess(tarPath, w, func(w io.Writer) (io.WriteCloser, error) { return kgzip.NewWriterLevel(w, 6) })
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

func capacityRegistry(b *testing.B) *registry {
	b.Helper()
	bin := envOr("KILN_REGISTRY", filepath.Join("..", "..", "bin", "registry"))
	if !exists(bin) {
		b.Fatalf("no registry binary at %s: run `make registry` or set KILN_REGISTRY", bin)
	}
	r, err := startRegistry(context.Background(), bin, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.stop)
	return r
}

// processCPU is the user+system CPU time of this process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func fileSize(b *testing.B, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func envInt(b *testing.B, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", key, v)
	}
	return n
}

// smallTar is a one-file layer: the no-op benchmark measures reconciles,
// not layers.
func smallTar(b *testing.B) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := "hello\n"
	if err := tw.WriteHeader(&tar.Header{Name: "app/hello.txt", Mode: 0o644, Size: int64(len(body)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		b.Fatal(err)
	}
	if _, err := io.WriteString(tw, body); err != nil {
		b.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}
