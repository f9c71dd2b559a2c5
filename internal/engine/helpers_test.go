package engine

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/ulikunitz/xz"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/blobstore"
	kilnregistry "github.com/kiln-build/kiln/internal/registry"
)

// entry is one file of a test tarball.
type entry struct {
	name     string
	typ      byte
	body     string
	linkname string
	mode     int64
}

func file(name, body string) entry {
	return entry{name: name, typ: tar.TypeReg, body: body, mode: 0o644}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, linkname: target, mode: 0o777}
}

// makeTar writes entries with archive/tar at a fixed mtime.
func makeTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.linkname,
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
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

func xzBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// counter counts registry requests by method and path kind.
type counter struct {
	mu    sync.Mutex
	count map[string]int
}

func (c *counter) add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.count == nil {
		c.count = map[string]int{}
	}
	c.count[key]++
}

func (c *counter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count[key]
}

// writes counts every request that changes the registry.
func (c *counter) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, v := range c.count {
		if strings.HasPrefix(k, "PUT") || strings.HasPrefix(k, "POST") || strings.HasPrefix(k, "PATCH") {
			n += v
		}
	}
	return n
}

func (c *counter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count = map[string]int{}
}

// testRegistry is go-containerregistry's in-process registry behind a
// request counter and an optional fault injector.
type testRegistry struct {
	srv    *httptest.Server
	counts *counter
	// fault, when set, may answer a request instead of the registry.
	fault atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]

	mu        sync.Mutex
	repoBlobs map[string]bool // "repo@digest" that repo received
}

func newTestRegistry(t testing.TB) *testRegistry {
	t.Helper()
	tr := &testRegistry{counts: &counter{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := tr.fault.Load(); f != nil && (*f)(w, r) {
			return
		}
		kind := "blob"
		if strings.Contains(r.URL.Path, "/manifests/") {
			kind = "manifest"
		}
		if r.URL.Query().Get("mount") != "" {
			kind = "mount"
		}
		tr.counts.add(r.Method + " " + kind)
		if kind == "blob" && r.Method == http.MethodHead && !tr.holds(r.URL.Path) {
			// go-containerregistry's registry keeps one blob namespace;
			// a real registry answers per repository.
			http.NotFound(w, r)
			return
		}
		if kind == "mount" && tr.mount(w, r) {
			return
		}
		rec := &statusWriter{ResponseWriter: w}
		reg.ServeHTTP(rec, r)
		tr.record(r, rec.status)
	}))
	t.Cleanup(tr.srv.Close)
	return tr
}

// holds reports whether the repository of a HEAD /v2/<repo>/blobs/<digest>
// received that blob (uploaded or mounted).
func (tr *testRegistry) holds(path string) bool {
	repo, d, ok := strings.Cut(strings.TrimPrefix(path, "/v2/"), "/blobs/")
	if !ok {
		return true
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.repoBlobs[repo+"@"+d]
}

// record notes blobs that land in a repository: a finished upload
// (PUT ...?digest=) or a successful mount (POST ...?mount=&from=).
func (tr *testRegistry) record(r *http.Request, status int) {
	repo, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/")
	if !ok || status >= 300 {
		return
	}
	d := r.URL.Query().Get("digest")
	if d == "" {
		d = r.URL.Query().Get("mount")
	}
	if d == "" {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.repoBlobs == nil {
		tr.repoBlobs = map[string]bool{}
	}
	tr.repoBlobs[repo+"@"+d] = true
}

// mount answers a cross-repository mount the way distribution does (201
// when the source repository holds the blob); go-containerregistry's
// registry has no mounts. It reports whether it answered.
func (tr *testRegistry) mount(w http.ResponseWriter, r *http.Request) bool {
	repo, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/")
	d, from := r.URL.Query().Get("mount"), r.URL.Query().Get("from")
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if !tr.repoBlobs[from+"@"+d] {
		return false
	}
	tr.repoBlobs[repo+"@"+d] = true
	w.Header().Set("Location", "/v2/"+repo+"/blobs/"+d)
	w.Header().Set("Docker-Content-Digest", d)
	w.WriteHeader(http.StatusCreated)
	return true
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// host is the registry's host:port (loopback: go-containerregistry speaks http).
func (tr *testRegistry) host() string { return strings.TrimPrefix(tr.srv.URL, "http://") }

// fileServer serves fixed bodies by path and counts GETs.
type fileServer struct {
	srv    *httptest.Server
	mu     sync.Mutex
	files  map[string][]byte
	counts map[string]int
}

func newFileServer(t testing.TB) *fileServer {
	t.Helper()
	fs := &fileServer{files: map[string][]byte{}, counts: map[string]int{}}
	fs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.mu.Lock()
		body, ok := fs.files[r.URL.Path]
		fs.counts[r.URL.Path]++
		fs.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Unix(1700000000, 0), bytes.NewReader(body))
	}))
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *fileServer) put(path string, body []byte) string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.files[path] = body
	return fs.srv.URL + path
}

func (fs *fileServer) gets(path string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.counts[path]
}

func newEngine(t testing.TB, cacheDir string) *Engine {
	t.Helper()
	if cacheDir == "" {
		cacheDir = t.TempDir()
	}
	store, err := blobstore.Open(cacheDir, blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &Engine{
		Store:    store,
		Registry: kilnregistry.Options{Retries: 3, Sleep: func(context.Context, time.Duration) error { return nil }},
	}
}

func imageBuild(name, target string, layers ...kilnv1.Layer) *kilnv1.ImageBuild {
	ib := &kilnv1.ImageBuild{}
	ib.Name, ib.Namespace, ib.Generation = name, "default", 1
	ib.Spec.Base = &kilnv1.Base{Image: "scratch"}
	ib.Spec.Layers = layers
	ib.Spec.Target.Image = target
	return ib
}

func urlLayer(name, url string) kilnv1.Layer {
	return kilnv1.Layer{Name: name, Source: kilnv1.Source{URL: url}}
}

func globBlobs(root string) ([]string, error) {
	return filepath.Glob(filepath.Join(root, "blobs", "sha256", "*"))
}
