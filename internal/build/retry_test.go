package build

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/source"
)

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
	reg := newTestRegistry(t)
	e := newEngine(t, "")
	e.Source = source.Options{Sleep: noSleep}
	_, err := e.Build(context.Background(), imageBuild("app", reg.host()+"/team/app:1", urlLayer("app", srv.URL+"/app.tar")), Inputs{}, Options{})
	if err == nil || failure.IsPermanent(err) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("want a transient 503 error, got %v", err)
	}
	if got := requests.Load(); got != 1+source.DefaultRetries {
		t.Fatalf("%d requests for one layer, want %d (err %v)", got, 1+source.DefaultRetries, err)
	}
}
