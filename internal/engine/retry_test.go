package engine

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/source"
	"github.com/kiln-build/kiln/internal/testkit"
)

// TestPushedDigestMustBeTheRegistrys: a registry (here a proxy in front of
// one) that answers the manifest PUT with another Docker-Content-Digest than
// the one of the manifest kiln built fails the build, naming both digests,
// and the extra tag is not moved.
func TestPushedDigestMustBeTheRegistrys(t *testing.T) {
	files := testkit.NewFileServer(t)
	url := files.Put("/app.tar", testkit.Tar(t, testkit.File("app/a", "a")))
	clean := testkit.NewRegistry(t)
	want, err := newEngine(t, "").Build(context.Background(), imageBuild("app", clean.Host+"/team/app:1", urlLayer("app", url)), Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}

	other := "sha256:" + strings.Repeat("c", 64)
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			w = &rewrittenDigest{ResponseWriter: w, digest: other}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	ib := imageBuild("app", host+"/team/app:1", urlLayer("app", url))
	ib.Spec.Target.Tags = []string{"latest"}
	_, err = newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	assertFailure(t, err, failure.PushRejected, "registry reports digest "+other+" for the pushed manifest, kiln computed "+want.Status.Digest)
	ref, _ := name.ParseReference(host + "/team/app:latest")
	if _, err := remote.Head(ref); err == nil {
		t.Fatal("the extra tag was moved to a manifest the registry misreports")
	}
}

// rewrittenDigest replaces the Docker-Content-Digest of a response.
type rewrittenDigest struct {
	http.ResponseWriter
	digest string
}

func (w *rewrittenDigest) WriteHeader(code int) {
	w.Header().Set("Docker-Content-Digest", w.digest)
	w.ResponseWriter.WriteHeader(code)
}

// TestLayerFetchRetryBudget: a layer whose stream breaks mid-way and whose
// server then answers 503 forever is fetched with 1 + source.DefaultRetries
// requests in all: the whole-layer attempts and the fetcher's request
// retries draw from one budget instead of multiplying (3 × 6).
func TestLayerFetchRetryBudget(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if requests.Add(1) == 1 {
			w.Header().Set("Content-Length", "100000")
			w.Write([]byte("partial")) // the server closes the connection short
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	reg := testkit.NewRegistry(t)
	e := newEngine(t, "")
	e.Source = source.Options{Sleep: noSleep}
	_, err := e.Build(context.Background(), imageBuild("app", reg.Host+"/team/app:1", urlLayer("app", srv.URL+"/app.tar")), Inputs{}, Options{})
	if err == nil || failure.IsPermanent(err) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("want a transient 503 error, got %v", err)
	}
	if got := requests.Load(); got != 1+source.DefaultRetries {
		t.Fatalf("%d requests for one layer, want %d (err %v)", got, 1+source.DefaultRetries, err)
	}
}
