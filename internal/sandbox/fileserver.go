package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"sync"
	"time"
)

// FileServer serves a directory over plain http on 127.0.0.1 and counts the
// requests per path, so tests can prove a layer was fetched once.
// net/http's FileServer gives Last-Modified/If-Modified-Since and Range.
type FileServer struct {
	closeOnce sync.Once
	closeErr  error
	srv       *http.Server
	base      string
	done      chan error

	mu     sync.Mutex
	counts map[string]int
}

// StartFileServer serves dir on a free port of 127.0.0.1.
func StartFileServer(dir string) (*FileServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting the file server: %w", err)
	}
	fs := &FileServer{
		base:   "http://" + l.Addr().String(),
		done:   make(chan error, 1),
		counts: map[string]int{},
	}
	files := http.FileServer(http.Dir(dir))
	fs.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fs.count(r.URL.Path)
			files.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { fs.done <- fs.srv.Serve(l) }()
	return fs, nil
}

func (f *FileServer) count(p string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[path.Clean("/"+p)]++
}

// URL returns the address of name (a slash-separated path under the served
// directory), e.g. http://127.0.0.1:39811/rootfs.tar.xz.
func (f *FileServer) URL(name string) string {
	u := url.URL{Path: path.Clean("/" + name)}
	return f.base + u.EscapedPath()
}

// Addr is host:port of the server.
func (f *FileServer) Addr() string { return f.base[len("http://"):] }

// Requests returns how many requests asked for name so far.
func (f *FileServer) Requests(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[path.Clean("/"+name)]
}

// Close stops the server, waiting briefly for requests in flight. Calling it
// again returns the first result.
func (f *FileServer) Close() error {
	f.closeOnce.Do(func() { f.closeErr = f.shutdown() })
	return f.closeErr
}

func (f *FileServer) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := f.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = f.srv.Close()
	}
	if serveErr := <-f.done; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return errors.Join(err, serveErr)
	}
	return err
}
