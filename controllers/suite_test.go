package controllers

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/source"
)

// env is the control plane and the running manager shared by the tests.
var env struct {
	cfg *rest.Config
	k8s client.Client // direct (uncached) client for the tests' own reads
	r   *ImageBuildReconciler
}

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	// Controller logs only on request: KILN_TEST_LOG=1 (debug with =2).
	level := slog.LevelError + 1
	switch os.Getenv("KILN_TEST_LOG") {
	case "1":
		level = slog.LevelInfo
	case "2":
		level = slog.LevelDebug
	}
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	te := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assetsDir(),
	}
	cfg, err := te.Start()
	if err != nil {
		// Never skip: a missing control plane is a broken setup, and says how to fix it.
		fmt.Fprintln(os.Stderr, "starting envtest control plane (run `make envtest-assets`):", err)
		return 1
	}
	defer func() { _ = te.Stop() }()
	cacheDir, err := os.MkdirTemp("", "kiln-controller-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(cacheDir)

	ctx, cancel := context.WithCancel(ctrl.LoggerInto(context.Background(), ctrl.Log))
	defer cancel()
	mgr, r, err := NewManager(ctx, cfg, ManagerOptions{
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		MaxConcurrentBuilds:    4,
		Engine: engine.Config{
			CacheDir: cacheDir,
			// Backoffs are real but short, so retry tests take milliseconds.
			Registry: registry.Options{Sleep: fastSleep},
			Source:   source.Options{Sleep: fastSleep},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating manager:", err)
		return 1
	}
	// Retries after a failure start at 50ms (production: 5s), so healing
	// tests take moments; an object may shorten its interval below the
	// CRD's 1m minimum with the testIntervalAnnotation.
	r.BackoffBase = 50 * time.Millisecond
	r.IntervalOf = testInterval
	env.cfg, env.r = cfg, r
	scheme, _ := NewScheme()
	if env.k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
	}
	return code
}

// testIntervalAnnotation sets an ImageBuild's interval in this suite (a
// Go duration), below the 1m minimum spec.interval allows.
const testIntervalAnnotation = "test.kiln.dev/interval"

func testInterval(ib *kilnv1.ImageBuild) (time.Duration, bool) {
	d, err := time.ParseDuration(ib.Annotations[testIntervalAnnotation])
	return d, err == nil && d > 0
}

func assetsDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	return filepath.Join("..", "bin", "k8s")
}

func fastSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d / 100)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// --- cluster helpers ---

var nsCounter atomic.Int32

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("t%d-%s", nsCounter.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(ns) > 50 {
		ns = ns[:50]
	}
	ns = strings.TrimRight(ns, "-")
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	// envtest runs no namespace controller: delete the ImageBuilds so they
	// stop polling this test's registries once it is gone.
	t.Cleanup(func() {
		_ = env.k8s.DeleteAllOf(context.Background(), &kilnv1.ImageBuild{}, client.InNamespace(ns))
	})
	return ns
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func get(t *testing.T, ns, name string) *kilnv1.ImageBuild {
	t.Helper()
	ib := &kilnv1.ImageBuild{}
	if err := env.k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, ib); err != nil {
		t.Fatalf("getting ImageBuild %s/%s: %v", ns, name, err)
	}
	return ib
}

// update re-reads the ImageBuild, applies mutate and updates it, retrying
// on conflicts with the controller's status writes.
func update(t *testing.T, ns, name string, mutate func(*kilnv1.ImageBuild)) {
	t.Helper()
	for range 10 {
		ib := get(t, ns, name)
		mutate(ib)
		err := env.k8s.Update(context.Background(), ib)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "modified") {
			t.Fatalf("updating %s/%s: %v", ns, name, err)
		}
	}
	t.Fatalf("updating %s/%s: conflicts persist", ns, name)
}

// waitFor polls cond until it holds or the timeout passes; the failure
// shows cond's last explanation.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %s", what, last)
}

// waitReady waits until the ImageBuild is Ready for its current generation
// and returns it.
func waitReady(t *testing.T, ns, name string) *kilnv1.ImageBuild {
	t.Helper()
	var ib *kilnv1.ImageBuild
	waitFor(t, 60*time.Second, ns+"/"+name+" Ready", func() (bool, string) {
		ib = get(t, ns, name)
		return isReadyNow(ib), conditionsOf(ib)
	})
	return ib
}

func isReadyNow(ib *kilnv1.ImageBuild) bool {
	for _, c := range ib.Status.Conditions {
		if c.Type == kilnv1.ReadyCondition {
			return c.Status == metav1.ConditionTrue && ib.Status.ObservedGeneration == ib.Generation
		}
	}
	return false
}

func condition(ib *kilnv1.ImageBuild, typ string) *metav1.Condition {
	for i := range ib.Status.Conditions {
		if ib.Status.Conditions[i].Type == typ {
			return &ib.Status.Conditions[i]
		}
	}
	return nil
}

func conditionsOf(ib *kilnv1.ImageBuild) string {
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d observed %d failures %d;", ib.Generation, ib.Status.ObservedGeneration, ib.Status.Failures)
	for _, c := range ib.Status.Conditions {
		fmt.Fprintf(&b, " %s=%s (%s: %s)", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

// --- test registry: go-containerregistry's in-process registry behind a
// counting, fault-injecting handler ---

type testRegistry struct {
	srv    *httptest.Server
	host   string
	writes atomic.Int64 // PUT, POST, PATCH, DELETE
	mu     sync.Mutex
	// requests counts requests by method and endpointKind, e.g.
	// "HEAD manifest", fault-answered ones included.
	requests map[string]int
	// fault, when set, may answer a request itself (return true).
	fault func(w http.ResponseWriter, r *http.Request) bool
}

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{requests: map[string]int{}}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		fault := tr.fault
		tr.requests[r.Method+" "+endpointKind(r.URL.Path)]++
		tr.mu.Unlock()
		if fault != nil && fault(w, r) {
			return
		}
		switch r.Method {
		case http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete:
			tr.writes.Add(1)
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.srv.Close)
	tr.host = strings.TrimPrefix(tr.srv.URL, "http://")
	return tr
}

// count returns how many requests of kind ("HEAD manifest") were made.
func (tr *testRegistry) count(kind string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.requests[kind]
}

func (tr *testRegistry) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	tr.mu.Lock()
	tr.fault = f
	tr.mu.Unlock()
}

// --- layer sources: an httptest file server that counts GETs per path ---

type fileServer struct {
	srv   *httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	gets  map[string]int
	// downloads counts GETs answered with the body (not 304 Not Modified).
	downloads map[string]int
	// block, when set for a path, is called instead of serving it.
	block map[string]http.HandlerFunc
}

func newFileServer(t *testing.T) *fileServer {
	t.Helper()
	fs := &fileServer{files: map[string][]byte{}, gets: map[string]int{}, downloads: map[string]int{}, block: map[string]http.HandlerFunc{}}
	fs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.mu.Lock()
		data, ok := fs.files[r.URL.Path]
		blocker := fs.block[r.URL.Path]
		if r.Method == http.MethodGet {
			fs.gets[r.URL.Path]++
		}
		fs.mu.Unlock()
		if blocker != nil {
			blocker(w, r)
			return
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		// Like a static file server or an object store: an ETag and
		// Last-Modified, and 304 for a matching conditional GET.
		w.Header().Set("ETag", fmt.Sprintf("%q", sha(data)))
		rec := &statusRecorder{ResponseWriter: w}
		http.ServeContent(rec, r, r.URL.Path, time.Unix(1700000000, 0), bytes.NewReader(data))
		if r.Method == http.MethodGet && rec.status == http.StatusOK {
			fs.mu.Lock()
			fs.downloads[r.URL.Path]++
			fs.mu.Unlock()
		}
	}))
	t.Cleanup(fs.srv.Close)
	return fs
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// downloadCount is how often path was served with its body.
func (fs *fileServer) downloadCount(path string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.downloads[path]
}

// put serves data at path and returns its URL.
func (fs *fileServer) put(path string, data []byte) string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.files[path] = data
	return fs.srv.URL + path
}

func (fs *fileServer) getCount(path string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.gets[path]
}

// --- tarballs ---

// tarball returns an uncompressed tar of files (path -> content), in the
// order given by paths.
func tarball(t *testing.T, files ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i+1 < len(files); i += 2 {
		hdr := &tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg, ModTime: time.Unix(1e9, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
