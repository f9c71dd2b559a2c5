package testkit

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// Fault may answer a registry request itself (returning true) instead of
// the registry: a 503, a reset connection, a 401 challenge. It may also
// call Registry.Serve with a wrapped writer to alter the real answer.
type Fault func(w http.ResponseWriter, r *http.Request) bool

// Registry is go-containerregistry's in-process registry behind a handler
// that counts requests and injects faults. Unlike the bare registry, blobs
// live per repository as in distribution: a HEAD of a blob the repository
// never received is 404, and cross-repository mounts work.
type Registry struct {
	// Host is host:port (plain http on loopback, which go-containerregistry
	// treats as insecure).
	Host  string
	URL   string
	inner http.Handler
	fault atomic.Pointer[Fault]

	mu        sync.Mutex
	attempts  map[string]int  // by method, faulted requests included
	counts    map[string]int  // "METHOD kind" the registry answered
	repoBlobs map[string]bool // "repo@digest" the repository received
}

// NewRegistry starts a registry that stops with the test. opts configure
// go-containerregistry's registry, e.g. ggcrregistry.WithReferrersSupport:
// without it, the registry has no referrers API (as the CNCF distribution
// registry) and clients fall back to the sha256-<hex> tag schema.
func NewRegistry(t testing.TB, opts ...ggcrregistry.Option) *Registry {
	t.Helper()
	opts = append([]ggcrregistry.Option{ggcrregistry.Logger(log.New(io.Discard, "", 0))}, opts...)
	r := &Registry{inner: ggcrregistry.New(opts...)}
	r.Reset()
	srv := httptest.NewServer(http.HandlerFunc(r.handle))
	t.Cleanup(srv.Close)
	r.URL, r.Host = srv.URL, strings.TrimPrefix(srv.URL, "http://")
	return r
}

// SetFault installs f (nil removes it).
func (r *Registry) SetFault(f Fault) {
	if f == nil {
		r.fault.Store(nil)
		return
	}
	r.fault.Store(&f)
}

func (r *Registry) handle(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.attempts[req.Method]++
	r.mu.Unlock()
	if f := r.fault.Load(); f != nil && (*f)(w, req) {
		return
	}
	r.Serve(w, req)
}

// Serve answers req as the registry, counted by method and kind.
func (r *Registry) Serve(w http.ResponseWriter, req *http.Request) {
	kind := requestKind(req)
	r.mu.Lock()
	r.counts[req.Method+" "+kind]++
	r.mu.Unlock()
	if kind == "blob" && req.Method == http.MethodHead && !r.holds(req.URL.Path) {
		http.NotFound(w, req)
		return
	}
	if kind == "mount" && r.mount(w, req) {
		return
	}
	rec := &StatusRecorder{ResponseWriter: w}
	r.inner.ServeHTTP(rec, req)
	r.record(req, rec.Status)
}

// requestKind is "manifest", "blob", "mount" (a blob upload that asks to
// mount from another repository) or "other" (/v2/, tags).
func requestKind(req *http.Request) string {
	switch {
	case strings.Contains(req.URL.Path, "/manifests/"):
		return "manifest"
	case req.URL.Query().Get("mount") != "":
		return "mount"
	case strings.Contains(req.URL.Path, "/blobs/"):
		return "blob"
	}
	return "other"
}

// Count is the number of requests the registry answered (faults excluded)
// for key: "METHOD kind" ("PUT manifest", "HEAD blob", "POST mount") or a
// bare method for all kinds.
func (r *Registry) Count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !strings.Contains(key, " ") {
		n := 0
		for k, v := range r.counts {
			if strings.HasPrefix(k, key+" ") {
				n += v
			}
		}
		return n
	}
	return r.counts[key]
}

// Attempts is the number of requests of method that reached the server,
// faulted ones included.
func (r *Registry) Attempts(method string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[method]
}

// Writes counts the answered requests that change the registry.
func (r *Registry) Writes() int {
	return r.Count(http.MethodPut) + r.Count(http.MethodPost) + r.Count(http.MethodPatch) + r.Count(http.MethodDelete)
}

// Reset zeroes the counts; stored blobs and manifests stay.
func (r *Registry) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts, r.counts = map[string]int{}, map[string]int{}
	if r.repoBlobs == nil {
		r.repoBlobs = map[string]bool{}
	}
}

// blobPath splits /v2/<repo>/blobs/<rest>.
func blobPath(p string) (repo, rest string, ok bool) {
	return strings.Cut(strings.TrimPrefix(p, "/v2/"), "/blobs/")
}

// holds reports whether the repository of a HEAD /v2/<repo>/blobs/<digest>
// received that blob (uploaded or mounted).
func (r *Registry) holds(path string) bool {
	repo, d, ok := blobPath(path)
	if !ok {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.repoBlobs[repo+"@"+d]
}

// record notes blobs that land in a repository: a finished upload
// (PUT ...?digest=) or a successful mount.
func (r *Registry) record(req *http.Request, status int) {
	repo, _, ok := blobPath(req.URL.Path)
	if !ok || status >= 300 {
		return
	}
	d := req.URL.Query().Get("digest")
	if d == "" {
		d = req.URL.Query().Get("mount")
	}
	if d == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.repoBlobs[repo+"@"+d] = true
}

// mount answers a cross-repository mount the way distribution does (201
// when the source repository holds the blob); go-containerregistry's
// registry has no mounts. It reports whether it answered.
func (r *Registry) mount(w http.ResponseWriter, req *http.Request) bool {
	repo, _, _ := blobPath(req.URL.Path)
	d, from := req.URL.Query().Get("mount"), req.URL.Query().Get("from")
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.repoBlobs[from+"@"+d] {
		return false
	}
	r.repoBlobs[repo+"@"+d] = true
	w.Header().Set("Location", "/v2/"+repo+"/blobs/"+d)
	w.Header().Set("Docker-Content-Digest", d)
	w.WriteHeader(http.StatusCreated)
	return true
}

// StatusRecorder remembers the status a handler wrote.
type StatusRecorder struct {
	http.ResponseWriter
	Status int
}

func (w *StatusRecorder) WriteHeader(code int) {
	w.Status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusRecorder) Write(b []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}
