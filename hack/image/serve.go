package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// server serves the layer tarballs to `kiln build` on a loopback port for
// the duration of one build. kiln reads layers from http(s) URLs, ConfigMaps,
// Secrets or registry blobs; a loopback URL is the one that needs neither a
// registry nor the binary base64-encoded into YAML (tens of MB through a YAML
// parser, and ConfigMaps are limited to 1 MiB on a cluster anyway). The
// layers' digests are pinned in the spec, so no other bytes are accepted.
type server struct {
	srv  *http.Server
	addr string
	done chan error
}

// serve starts serving files (URL path without the leading "/" -> file) on
// 127.0.0.1 and a free port, with modTime as their Last-Modified. Any other
// path is 404.
func serve(files map[string]string, modTime time.Time) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on loopback for the layer server: %w", err)
	}
	mux := http.NewServeMux()
	for name, path := range files {
		mux.HandleFunc("GET /"+name, func(w http.ResponseWriter, r *http.Request) { serveFile(w, r, path, modTime) })
	}
	s := &server{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		addr: ln.Addr().String(),
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// serveFile answers with the file's bytes; http.ServeContent adds ranges and
// conditional requests, which kiln's retries use to resume.
func serveFile(w http.ResponseWriter, r *http.Request, path string, modTime time.Time) {
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, "layer unavailable", http.StatusInternalServerError)
		return
	}
	defer func() { _ = f.Close() }()
	http.ServeContent(w, r, "", modTime, f)
}

// url is the address of a served file.
func (s *server) url(name string) string { return "http://" + s.addr + "/" + name }

// close stops the server; in-flight requests are cut (the build is over).
func (s *server) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("stopping the layer server: %w", err)
	}
	return nil
}
