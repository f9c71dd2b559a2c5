package testkit

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// FileServer serves fixed bodies by path like a static file server or an
// object store: a strong ETag (the body's digest), Last-Modified Time,
// Range, and 304 for a matching conditional GET. It counts requests.
type FileServer struct {
	URL string

	mu        sync.Mutex
	files     map[string][]byte
	handlers  map[string]http.HandlerFunc
	requests  map[string]int // every method
	gets      map[string]int
	downloads map[string]int // GETs answered 200 with the body
}

// NewFileServer starts a file server that stops with the test.
func NewFileServer(t testing.TB) *FileServer {
	t.Helper()
	fs := &FileServer{files: map[string][]byte{}, handlers: map[string]http.HandlerFunc{},
		requests: map[string]int{}, gets: map[string]int{}, downloads: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(srv.Close)
	fs.URL = srv.URL
	return fs
}

func (fs *FileServer) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	fs.mu.Lock()
	body, ok := fs.files[p]
	h := fs.handlers[p]
	fs.requests[p]++
	if r.Method == http.MethodGet {
		fs.gets[p]++
	}
	fs.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", fmt.Sprintf("%q", Digest(body)))
	rec := &StatusRecorder{ResponseWriter: w}
	http.ServeContent(rec, r, p, Time, bytes.NewReader(body))
	if r.Method == http.MethodGet && rec.Status == http.StatusOK {
		fs.mu.Lock()
		fs.downloads[p]++
		fs.mu.Unlock()
	}
}

// Put serves body at path and returns its URL.
func (fs *FileServer) Put(path string, body []byte) string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.files[path] = body
	return fs.URL + path
}

// Handle answers path with h instead of a body (nil restores the body);
// it returns the path's URL.
func (fs *FileServer) Handle(path string, h http.HandlerFunc) string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if h == nil {
		delete(fs.handlers, path)
	} else {
		fs.handlers[path] = h
	}
	return fs.URL + path
}

// Requests is how many requests of any method asked for path.
func (fs *FileServer) Requests(path string) int { return fs.count(fs.requests, path) }

// Gets is how many GETs asked for path.
func (fs *FileServer) Gets(path string) int { return fs.count(fs.gets, path) }

// Downloads is how often path was served with its body (not 304, not a
// handler's answer).
func (fs *FileServer) Downloads(path string) int { return fs.count(fs.downloads, path) }

func (fs *FileServer) count(m map[string]int, path string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return m[path]
}
