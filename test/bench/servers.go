package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// registry is a CNCF distribution process with its own storage directory.
// Every measured run gets a fresh one so no tool finds blobs left by another.
type registry struct {
	cmd  *exec.Cmd
	dir  string
	addr string
	done chan error
}

const registryConfig = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`

func startRegistry(ctx context.Context, bin, parent string) (*registry, error) {
	dir, err := os.MkdirTemp(parent, "registry-")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, registryConfig, filepath.Join(dir, "storage"), addr), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	r := &registry{dir: dir, addr: addr, done: make(chan error, 1)}
	r.cmd = exec.Command(bin, "serve", cfg)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	if err := waitHTTP(ctx, "http://"+addr+"/v2/", r.done); err != nil {
		r.stop()
		return nil, fmt.Errorf("registry did not start (log in %s): %w", logf.Name(), err)
	}
	return r, nil
}

func (r *registry) stop() {
	if r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	_ = os.RemoveAll(r.dir)
}

func waitHTTP(ctx context.Context, u string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// uploadStats counts what clients send to the registry.
type uploadStats struct {
	Bytes         int64 `json:"bytes"`         // request bodies of POST/PATCH/PUT
	BlobPuts      int64 `json:"blobPuts"`      // PUT .../blobs/uploads/... (blob commits)
	ManifestPuts  int64 `json:"manifestPuts"`  // PUT .../manifests/...
	Requests      int64 `json:"requests"`      // everything
	BlobUploads   int64 `json:"blobUploads"`   // POST .../blobs/uploads/ (started uploads, mounts included)
	ManifestBytes int64 `json:"manifestBytes"` // bodies of manifest PUTs
}

// countingProxy sits in front of the current registry; both tools talk to
// it, so bytes uploaded are counted the same way for each. The backend is
// swapped for every run (a fresh registry) while the address stays.
type countingProxy struct {
	srv     *http.Server
	addr    string
	backend atomic.Pointer[url.URL]

	mu sync.Mutex
	st uploadStats
}

func startProxy() (*countingProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{addr: l.Addr().String()}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(p.backend.Load())
			// Keep the client's Host: the registry builds upload Locations
			// from it, and they must point back at the proxy.
			r.Out.Host = r.In.Host
		},
		FlushInterval: -1,
		// A reset from the registry surfaces as a 502 to the client.
		ErrorLog: nil,
	}
	p.srv = &http.Server{Handler: p.wrap(rp), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

func (p *countingProxy) setBackend(addr string) {
	p.backend.Store(&url.URL{Scheme: "http", Host: addr})
}

func (p *countingProxy) reset() uploadStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	p.st = uploadStats{}
	return st
}

func (p *countingProxy) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.st.Requests++
		isManifest := strings.Contains(r.URL.Path, "/manifests/")
		switch {
		case r.Method == http.MethodPut && isManifest:
			p.st.ManifestPuts++
		case r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/"):
			p.st.BlobPuts++
		case r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/blobs/uploads/"):
			p.st.BlobUploads++
		}
		p.mu.Unlock()
		if r.Body != nil && (r.Method == http.MethodPut || r.Method == http.MethodPatch || r.Method == http.MethodPost) {
			r.Body = &countingBody{ReadCloser: r.Body, p: p, manifest: isManifest}
		}
		next.ServeHTTP(w, r)
	})
}

func (p *countingProxy) close() { _ = p.srv.Close() }

type countingBody struct {
	io.ReadCloser
	p        *countingProxy
	manifest bool
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	if n > 0 {
		c.p.mu.Lock()
		c.p.st.Bytes += int64(n)
		if c.manifest {
			c.p.st.ManifestBytes += int64(n)
		}
		c.p.mu.Unlock()
	}
	return n, err
}

// fileServer serves the inputs directory (sendfile, range requests).
type fileServer struct {
	srv  *http.Server
	addr string
}

func startFileServer(dir string) (*fileServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fs := &fileServer{addr: l.Addr().String()}
	fs.srv = &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = fs.srv.Serve(l) }()
	return fs, nil
}

func (f *fileServer) url(name string) string { return "http://" + f.addr + "/" + name }

func (f *fileServer) close() { _ = f.srv.Close() }
