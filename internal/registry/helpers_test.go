package registry

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/kiln-build/kiln/internal/testkit"
)

// testRegistry is the test kit's registry with the faults these tests
// inject, set as fields before a push.
type testRegistry struct {
	*testkit.Registry

	mu sync.Mutex
	// fail503 makes the first n requests of each method answer 503.
	fail503 int
	// retryAfter is sent with injected 503s when set.
	retryAfter string
	// resetPatches resets the connection during the first n PATCH bodies.
	resetPatches int
	// status, when set, answers every request with it (e.g. 401).
	status int
	// fail503Each makes the first n attempts of every request (method and
	// path) answer 503, each request on its own.
	fail503Each int
	perRequest  map[string]int
	// manifestDigest, when set, replaces the Docker-Content-Digest of
	// manifest responses ("" removes it): a registry that reports another
	// digest than the one of the manifest kiln sent, or none at all.
	manifestDigest func(method string) (value string, replace bool)
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{Registry: testkit.NewRegistry(t), perRequest: map[string]int{}}
	r.SetFault(r.fault)
	return r
}

func (r *testRegistry) fault(w http.ResponseWriter, req *http.Request) bool {
	n := r.Attempts(req.Method)
	r.mu.Lock()
	r.perRequest[req.Method+" "+req.URL.Path]++
	status, ra, rewrite := r.status, r.retryAfter, r.manifestDigest
	fail := n <= r.fail503 || r.perRequest[req.Method+" "+req.URL.Path] <= r.fail503Each
	reset := req.Method == http.MethodPatch && r.resetPatches > 0
	if reset && !fail {
		r.resetPatches--
	}
	r.mu.Unlock()
	switch {
	case status != 0:
		w.WriteHeader(status)
		return true
	case fail:
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	case reset:
		// Read part of the chunk, then drop the connection mid-upload.
		_, _ = io.CopyN(io.Discard, req.Body, 100)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return true
	case rewrite != nil && strings.Contains(req.URL.Path, "/manifests/"):
		if v, ok := rewrite(req.Method); ok {
			r.Serve(&digestWriter{ResponseWriter: w, digest: v}, req)
			return true
		}
	}
	return false
}

// digestWriter replaces the Docker-Content-Digest header of a response.
type digestWriter struct {
	http.ResponseWriter
	digest string
}

func (d *digestWriter) WriteHeader(code int) {
	if d.digest == "" {
		d.Header().Del("Docker-Content-Digest")
	} else {
		d.Header().Set("Docker-Content-Digest", d.digest)
	}
	d.ResponseWriter.WriteHeader(code)
}

func (r *testRegistry) reset() {
	r.Reset()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.perRequest = map[string]int{}
}

// sleeps records the waits the retry transport asked for, without waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func testOptions(s *sleeps) Options {
	return Options{Keychain: authn.NewMultiKeychain(), Sleep: s.sleep}
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(3000, 3)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
