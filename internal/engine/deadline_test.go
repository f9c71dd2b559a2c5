package engine

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/source"
	"github.com/kiln-build/kiln/internal/testkit"
)

// trickle serves a gzip tar one byte every tick after the first 16.
func trickle(t *testing.T, tick time.Duration) string {
	t.Helper()
	body := testkit.Gzip(t, testkit.Tar(t, testkit.File("a", strings.Repeat("x", 4096))))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body[:16])
		for _, b := range body[16:] {
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(tick):
			}
			w.Write([]byte{b})
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/x.tar.gz"
}

// assertNothingLeft checks that a failed build pushed nothing and left no
// temp file in the store.
func assertNothingLeft(t *testing.T, e *Engine, reg *testkit.Registry) {
	t.Helper()
	if w := reg.Writes(); w != 0 {
		t.Errorf("%d registry writes for a failed build", w)
	}
	if tmp, _ := e.Store.TempFiles(); len(tmp) != 0 {
		t.Errorf("temp files left: %v", tmp)
	}
}

// A source that keeps sending, too slowly, ends the build with a transient
// error naming the layer, the request and the rate.
func TestTricklingSourceFailsTheLayer(t *testing.T) {
	reg := testkit.NewRegistry(t)
	u := trickle(t, 5*time.Millisecond)
	e := newEngine(t, "")
	e.LayerAttempts = 1
	e.Source = source.Options{MinRate: 1024, MinRateWindow: 50 * time.Millisecond, Retries: -1}
	ib := imageBuild("app", reg.Host+"/team/app:1", urlLayer("app", u))
	_, err := e.Build(context.Background(), ib, Inputs{}, Options{})
	want := fmt.Sprintf(`layer "app": GET %s: transfer slower than 1 KiB/s over 50ms (received `, u)
	if err == nil || failure.IsPermanent(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("want a transient error containing %q, got %v", want, err)
	}
	assertNothingLeft(t, e, reg)
}

// A build that outlives BuildTimeout fails permanently with LimitExceeded,
// naming the deadline, its flag and what was running.
func TestBuildDeadline(t *testing.T) {
	reg := testkit.NewRegistry(t)
	// Fast enough for the rate check, far too slow for the deadline (about
	// 100 bytes, seconds), and the deadline long enough that a loaded
	// machine reaches the layer fetch before it.
	u := trickle(t, 50*time.Millisecond)
	e := newEngine(t, "")
	e.BuildTimeout = time.Second
	e.Source = source.Options{MinRate: 1, MinRateWindow: time.Second}
	ib := imageBuild("app", reg.Host+"/team/app:1", urlLayer("app", u))
	_, err := e.Build(context.Background(), ib, Inputs{}, Options{})
	if failure.ReasonOf(err) != failure.LimitExceeded || !failure.IsPermanent(err) {
		t.Fatalf("want permanent LimitExceeded, got %s: %v", failure.ReasonOf(err), err)
	}
	for _, want := range []string{"build exceeded its deadline of 1s (--build-timeout)", `layer "app"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	assertNothingLeft(t, e, reg)

	// The caller's own cancellation is not a deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	e.BuildTimeout = time.Hour
	_, err = e.Build(ctx, ib.DeepCopy(), Inputs{}, Options{})
	if err == nil || failure.ReasonOf(err) == failure.LimitExceeded {
		t.Errorf("caller's cancellation reported as %s: %v", failure.ReasonOf(err), err)
	}
}
