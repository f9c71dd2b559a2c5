package source

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/failure"
)

func TestRateWindow(t *testing.T) {
	type step struct {
		n    int64
		d    time.Duration
		slow bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"enough bytes within the window", []step{{500, 40 * time.Millisecond, false}, {600, 40 * time.Millisecond, false}}},
		{"short at the window's end", []step{{500, 60 * time.Millisecond, false}, {0, 40 * time.Millisecond, true}}},
		{"a passed window starts the next empty", []step{{5000, time.Millisecond, false}, {10, 100 * time.Millisecond, true}}},
		{"one slow read", []step{{1, 100 * time.Millisecond, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newRateWindow(10240, 100*time.Millisecond) // 1024 bytes per window
			for i, s := range tt.steps {
				if got := w.add(s.n, s.d); got != s.slow {
					t.Fatalf("step %d: slow = %v, want %v (window %+v)", i, got, s.slow, *w)
				}
			}
		})
	}
}

// tricklingServer sends a first chunk, then one byte every tick.
func tricklingServer(t *testing.T, first []byte, total int, tick time.Duration) string {
	srv, _ := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(total))
		w.Write(first)
		w.(http.Flusher).Flush()
		for range total - len(first) {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(tick):
			}
			w.Write([]byte{'x'})
			w.(http.Flusher).Flush()
		}
	})
	return srv.URL
}

// A body that keeps sending, but too slowly, ends the attempt with a
// transient error that names the layer, the request and the rate; so does
// one that goes silent when the window is shorter than the read timeout
// (the watchdog fires inside the blocked read).
func TestURLTrickle(t *testing.T) {
	tests := []struct {
		name string
		tick time.Duration
		want string
	}{
		{"one byte every 5ms", 5 * time.Millisecond, "(received "},
		{"silent after the first bytes", time.Hour, "(received 3 B)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tricklingServer(t, []byte("abc"), 1000, tt.tick)
			f, rs := fetcher(Options{MinRate: 1024, MinRateWindow: 50 * time.Millisecond, ReadTimeout: 10 * time.Second})
			got, _, err := readAll(t, f, Spec{Name: "app", URL: url + "/x.tar?X-Amz-Signature=SECRET"})
			assertErr(t, err, failure.Transient, false,
				fmt.Sprintf(`layer "app": GET %s/x.tar: transfer slower than 1 KiB/s over 50ms `, url))
			assertErr(t, err, failure.Transient, false, tt.want)
			if len(got) >= 1000 || len(rs.got()) != 0 || bytes.Contains([]byte(err.Error()), []byte("SECRET")) {
				t.Errorf("read %d bytes, sleeps %v, err %v", len(got), rs.got(), err)
			}
		})
	}
}

// The same server passes when the check is off, and a fast server passes a
// consumer that is slower than the window: only time spent waiting for the
// network counts.
func TestURLRateCountsOnlyNetworkTime(t *testing.T) {
	slow := tricklingServer(t, []byte("abc"), 40, time.Millisecond)
	f, _ := fetcher(Options{MinRate: -1, MinRateWindow: 5 * time.Millisecond})
	if got, _, err := readAll(t, f, Spec{Name: "app", URL: slow}); err != nil || len(got) != 40 {
		t.Fatalf("check disabled: %d bytes, %v", len(got), err)
	}

	// 8 MiB/s over 1s: 8 MiB per window, far more than the body, so the
	// check passes only if the consumer's pauses (1.1s each) are not
	// counted; the window is wide enough that loopback reads on a loaded
	// machine stay inside it.
	body := bytes.Repeat([]byte("x"), bodyBuffer+bodyBuffer/2)
	srv, _ := server(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.Write(body) })
	f, _ = fetcher(Options{MinRate: 8 << 20, MinRateWindow: time.Second})
	readSlowly(t, f, srv.URL, 192<<10, 1100*time.Millisecond, len(body))
}
