package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/retry"
	"github.com/kiln-build/kiln/internal/testkit"
)

// recordingSleep records the waits instead of waiting.
type recordingSleep struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *recordingSleep) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delays = append(r.delays, d)
	return ctx.Err()
}

func (r *recordingSleep) got() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.delays...)
}

// server serves handler and counts requests.
func server(t *testing.T, handler func(n int, w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var count atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler(int(count.Add(1)), w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &count
}

func fetcher(opts Options) (*Fetcher, *recordingSleep) {
	rs := &recordingSleep{}
	if opts.Sleep == nil {
		opts.Sleep = rs.sleep
	}
	return NewFetcher(opts), rs
}

// readAll opens s and reads it to the end.
func readAll(t *testing.T, f *Fetcher, s Spec) ([]byte, *Stream, error) {
	t.Helper()
	st, err := f.Open(context.Background(), s)
	if err != nil {
		return nil, nil, err
	}
	defer st.Close()
	b, err := io.ReadAll(st)
	return b, st, err
}

func assertErr(t *testing.T, err error, reason failure.Reason, permanent bool, fragment string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s %q", reason, fragment)
	}
	if got := failure.ReasonOf(err); got != reason || failure.IsPermanent(err) != permanent {
		t.Errorf("error %q: reason %s permanent %v, want %s %v", err, got, failure.IsPermanent(err), reason, permanent)
	}
	if !strings.Contains(err.Error(), fragment) {
		t.Errorf("error %q does not contain %q", err, fragment)
	}
}

func TestURLSuccess(t *testing.T) {
	body := bytes.Repeat([]byte("layer bytes "), 100000) // > the read-ahead buffer
	srv, count := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t0k" || r.Header.Get("Accept-Encoding") != "identity" {
			http.Error(w, "bad headers", http.StatusBadRequest)
			return
		}
		w.Write(body)
	})
	for _, digest := range []string{"", testkit.Digest(body)} {
		f, rs := fetcher(Options{})
		got, st, err := readAll(t, f, Spec{Name: "rootfs", URL: srv.URL + "/x.tar", Digest: digest,
			Headers: map[string]string{"Authorization": "Bearer t0k"}})
		if err != nil {
			t.Fatalf("digest %q: %v", digest, err)
		}
		if !bytes.Equal(got, body) || st.Digest().String() != testkit.Digest(body) || st.Size() != int64(len(body)) || st.Kind() != KindURL {
			t.Fatalf("got %d bytes, digest %s, size %d, kind %s", len(got), st.Digest(), st.Size(), st.Kind())
		}
		if len(rs.got()) != 0 {
			t.Fatalf("slept %v", rs.got())
		}
	}
	if count.Load() != 2 {
		t.Fatalf("requests = %d", count.Load())
	}
}

func TestURLDigestMismatch(t *testing.T) {
	srv, _ := server(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.Write([]byte("actual")) })
	f, _ := fetcher(Options{})
	want := testkit.Digest([]byte("declared"))
	_, st, err := readAll(t, f, Spec{Name: "rootfs", URL: srv.URL, Digest: want})
	assertErr(t, err, failure.DigestMismatch, true,
		fmt.Sprintf(`layer "rootfs": fetched bytes have digest %s, spec declares %s`, testkit.Digest([]byte("actual")), want))
	if _, err2 := st.Read(make([]byte, 1)); err2 != err {
		t.Fatalf("error not sticky: %v", err2)
	}
}

func TestURLStatusClassification(t *testing.T) {
	tests := []struct {
		status    int
		reason    failure.Reason
		permanent bool
		requests  int32
		fragment  string
	}{
		{http.StatusNotFound, failure.SourceNotFound, true, 1, `layer "rootfs": GET http://`},
		{http.StatusGone, failure.SourceNotFound, true, 1, "410 Gone: nope"},
		{http.StatusUnauthorized, failure.Unauthorized, true, 1, "401 Unauthorized"},
		{http.StatusForbidden, failure.Unauthorized, true, 1, "403 Forbidden"},
		{http.StatusBadRequest, failure.InvalidSpec, true, 1, "400 Bad Request"},
		{http.StatusNotModified, failure.InvalidSpec, true, 1, "304 Not Modified"},
		{http.StatusRequestTimeout, failure.Transient, false, 3, "408 Request Timeout: nope (gave up after 3 attempts)"},
		{http.StatusInternalServerError, failure.Transient, false, 3, "500 Internal Server Error"},
		{http.StatusBadGateway, failure.Transient, false, 3, "502 Bad Gateway"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			srv, count := server(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "nope", tt.status)
			})
			f, rs := fetcher(Options{Retries: 2})
			_, err := f.Open(context.Background(), Spec{Name: "rootfs", URL: srv.URL + "/l.tar?X-Signature=secret"})
			assertErr(t, err, tt.reason, tt.permanent, tt.fragment)
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the query: %v", err)
			}
			if count.Load() != tt.requests || len(rs.got()) != int(tt.requests-1) {
				t.Errorf("requests = %d, sleeps = %v; want %d requests", count.Load(), rs.got(), tt.requests)
			}
		})
	}
}

func TestURLRetryThenSuccess(t *testing.T) {
	srv, count := server(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	})
	f, rs := fetcher(Options{})
	got, _, err := readAll(t, f, Spec{Name: "rootfs", URL: srv.URL})
	if err != nil || string(got) != "ok" || count.Load() != 3 {
		t.Fatalf("got %q, %v after %d requests", got, err, count.Load())
	}
	delays := rs.got()
	if len(delays) != 2 {
		t.Fatalf("delays = %v", delays)
	}
	// Exponential from 200ms with jitter in the upper half.
	for i, d := range delays {
		hi := backoffBase << i
		if d < hi/2 || d > hi {
			t.Errorf("delay %d = %s, want in [%s, %s]", i, d, hi/2, hi)
		}
	}
}

func TestURLRetryAfter(t *testing.T) {
	srv, count := server(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte("ok"))
	})
	f, rs := fetcher(Options{})
	if _, _, err := readAll(t, f, Spec{Name: "rootfs", URL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	if d := rs.got(); len(d) != 1 || d[0] != time.Second || count.Load() != 2 {
		t.Fatalf("delays = %v, requests = %d; want [1s], 2", d, count.Load())
	}
}

func TestURLRetryAfterTooLong(t *testing.T) {
	srv, count := server(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	f, rs := fetcher(Options{})
	_, err := f.Open(context.Background(), Spec{Name: "rootfs", URL: srv.URL})
	assertErr(t, err, failure.Transient, false, "503 Service Unavailable (gave up after 1 attempts)")
	if failure.RetryAfterOf(err) != time.Hour || count.Load() != 1 || len(rs.got()) != 0 {
		t.Fatalf("RetryAfter = %s, requests = %d, sleeps = %v", failure.RetryAfterOf(err), count.Load(), rs.got())
	}
}

func TestURLServerErrorForever(t *testing.T) {
	srv, count := server(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	})
	f, rs := fetcher(Options{}) // default: 5 retries
	_, err := f.Open(context.Background(), Spec{Name: "rootfs", URL: srv.URL})
	assertErr(t, err, failure.Transient, false, "500 Internal Server Error (gave up after 6 attempts)")
	if count.Load() != DefaultRetries+1 || len(rs.got()) != DefaultRetries {
		t.Fatalf("requests = %d, sleeps = %v", count.Load(), rs.got())
	}
}

// TestRetryBudgetSharedWithWholeFetches drives the engine's shape of loop
// (retry a whole fetch whose stream broke mid-way) around Open: the first
// response breaks after a few bytes, every later one is a 503. The whole
// chain stays within one budget: 1 + DefaultRetries requests, where a
// budget per Open made 13 (1, then twice 1 + 5).
func TestRetryBudgetSharedWithWholeFetches(t *testing.T) {
	srv, count := server(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Content-Length", "1000")
			w.Write([]byte("partial")) // the server closes the connection short
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	f, rs := fetcher(Options{})
	ctx := f.WithRetryBudget(context.Background())
	var err error
	for a := 0; a < 3; a++ {
		if a > 0 && !retry.Take(ctx) {
			break
		}
		var st *Stream
		if st, err = f.Open(ctx, Spec{Name: "rootfs", URL: srv.URL}); err != nil {
			continue
		}
		_, err = io.ReadAll(st)
		st.Close()
	}
	assertErr(t, err, failure.Transient, false, "503 Service Unavailable (gave up after")
	if got := count.Load(); got != 1+DefaultRetries {
		t.Fatalf("%d requests, want %d (one budget for the chain); sleeps %v", got, 1+DefaultRetries, rs.got())
	}
	if left := retry.BudgetOf(ctx).Left(); left != 0 {
		t.Fatalf("%d retries left after a persistent 503", left)
	}
}

func TestURLConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	f, rs := fetcher(Options{Retries: 1})
	_, err := f.Open(context.Background(), Spec{Name: "rootfs", URL: addr + "/x?token=secret"})
	assertErr(t, err, failure.Transient, false, "connection refused")
	if len(rs.got()) != 1 || strings.Contains(err.Error(), "secret") {
		t.Fatalf("sleeps = %v, err = %v", rs.got(), err)
	}
}

// stallingServer sends prefix, then stalls until the client gives up.
func stallingServer(t *testing.T, stallOn func(n int) bool, prefix []byte) (*httptest.Server, *atomic.Int32) {
	return server(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(prefix)+100))
		w.WriteHeader(http.StatusOK)
		w.Write(prefix)
		w.(http.Flusher).Flush()
		if stallOn(n) {
			<-r.Context().Done()
			return
		}
		w.Write(make([]byte, 100))
	})
}

func TestURLStallMidBody(t *testing.T) {
	srv, count := stallingServer(t, func(int) bool { return true }, []byte("some"))
	// The timeout is short enough for a quick test, long enough that a
	// loaded machine does not stall a healthy read.
	f, rs := fetcher(Options{ReadTimeout: 500 * time.Millisecond})
	got, _, err := readAll(t, f, Spec{Name: "rootfs", URL: srv.URL})
	assertErr(t, err, failure.Transient, false, `layer "rootfs": reading http://`)
	assertErr(t, err, failure.Transient, false, "no data received for 500ms (after 4 bytes)")
	if string(got) != "some" || count.Load() != 1 || len(rs.got()) != 0 {
		t.Fatalf("got %q, requests %d, sleeps %v: a stall after bytes were handed out must not be retried", got, count.Load(), rs.got())
	}
}

func TestURLStallBeforeFirstByteIsRetried(t *testing.T) {
	srv, count := stallingServer(t, func(n int) bool { return n == 1 }, nil)
	f, rs := fetcher(Options{ReadTimeout: 500 * time.Millisecond})
	got, _, err := readAll(t, f, Spec{Name: "rootfs", URL: srv.URL})
	if err != nil || len(got) != 100 || count.Load() != 2 || len(rs.got()) != 1 {
		t.Fatalf("got %d bytes, %v, requests %d, sleeps %v", len(got), err, count.Load(), rs.got())
	}
}

// Time the consumer spends between Reads does not count as a stall.
func TestURLSlowConsumer(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 3*bodyBuffer)
	srv, _ := server(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.Write(body) })
	// Pauses longer than the timeout, which is generous enough that the
	// (buffered, loopback) reads themselves never come near it under load.
	f, _ := fetcher(Options{ReadTimeout: 300 * time.Millisecond})
	readSlowly(t, f, srv.URL, bodyBuffer, 400*time.Millisecond, len(body))
}

// readSlowly opens url and reads it with a pause before every Read of up
// to chunk bytes: a consumer slower than the fetcher's timers, whose time
// between Reads must not count against the source. The whole body (want
// bytes) must arrive without error.
func readSlowly(t *testing.T, f *Fetcher, url string, chunk int, pause time.Duration, want int) {
	t.Helper()
	st, err := f.Open(t.Context(), Spec{Name: "rootfs", URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	buf := make([]byte, chunk)
	n := 0
	for {
		time.Sleep(pause)
		m, err := st.Read(buf)
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
	}
	if n != want {
		t.Fatalf("read %d bytes, want %d", n, want)
	}
}

func TestURLMaxBytes(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 1000)
	tests := []struct {
		name    string
		chunked bool
	}{{"content-length", false}, {"chunked", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := server(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				if tt.chunked {
					w.Write(body[:500])
					w.(http.Flusher).Flush()
				}
				w.Write(body[len(body)/2*boolInt(tt.chunked):])
			})
			f, _ := fetcher(Options{MaxBytes: 999})
			got, _, err := readAll(t, f, Spec{Name: "rootfs", URL: srv.URL + "/big.tar"})
			assertErr(t, err, failure.LimitExceeded, true,
				fmt.Sprintf(`layer "rootfs": %s/big.tar is larger than the limit of 999 bytes (999 B)`, srv.URL))
			if len(got) > 999 {
				t.Fatalf("handed out %d bytes past the limit", len(got))
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestURLRedirects(t *testing.T) {
	var srv *httptest.Server
	srv, count := server(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/loop":
			http.Redirect(w, r, fmt.Sprintf("/loop?n=%d", n), http.StatusFound)
		case "/hop":
			http.Redirect(w, r, "/final", http.StatusMovedPermanently)
		case "/final":
			w.Write([]byte("final"))
		case "/metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		}
	})
	_ = srv
	f, rs := fetcher(Options{})
	got, _, err := readAll(t, f, Spec{Name: "rootfs", URL: srv.URL + "/hop"})
	if err != nil || string(got) != "final" {
		t.Fatalf("redirect: %q, %v", got, err)
	}

	count.Store(0)
	_, err = f.Open(context.Background(), Spec{Name: "rootfs", URL: srv.URL + "/loop"})
	assertErr(t, err, failure.InvalidSpec, true, "stopped after 5 redirects")
	if count.Load() != maxRedirects+1 || len(rs.got()) != 0 {
		t.Fatalf("requests = %d, sleeps = %v", count.Load(), rs.got())
	}

	_, err = f.Open(context.Background(), Spec{Name: "rootfs", URL: srv.URL + "/metadata"})
	assertErr(t, err, failure.SourceForbidden, true, `resolves to link-local or metadata address 169.254.169.254`)
}

func TestURLHostPolicy(t *testing.T) {
	srv, count := server(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	u, _ := url.Parse(srv.URL)
	tests := []struct {
		url      string
		allowed  []string
		fragment string // "" = allowed
	}{
		{url: "http://169.254.169.254/latest/meta-data/", fragment: `refusing http://169.254.169.254/latest/meta-data/: host "169.254.169.254" resolves to link-local or metadata address 169.254.169.254`},
		{url: "http://[fe80::1%25eth0]:8080/x", fragment: "link-local"},
		{url: "http://[::ffff:169.254.1.1]/x", fragment: "link-local or metadata address 169.254.1.1"},
		{url: "http://[fd00:ec2::254]/x", fragment: "metadata address fd00:ec2::254"},
		{url: "http://metadata.google.internal/computeMetadata/v1/", fragment: `host "metadata.google.internal" is a cloud metadata endpoint`},
		{url: "http://METADATA.google.internal./x", fragment: "cloud metadata endpoint"},
		{url: "ftp://example.com/x", fragment: `scheme "ftp" is not allowed`},
		{url: "file:///etc/passwd", fragment: `scheme "file" is not allowed`},
		{url: srv.URL, allowed: []string{"registry.example"}, fragment: `host "127.0.0.1" is not in the allowed hosts`},
		{url: srv.URL, allowed: []string{"127.0.0.1"}},
		{url: srv.URL, allowed: []string{u.Host}},
		{url: srv.URL},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			count.Store(0)
			f, _ := fetcher(Options{AllowedHosts: tt.allowed, Retries: -1,
				HTTPClient: &http.Client{Timeout: 10 * time.Second}})
			st, err := f.Open(context.Background(), Spec{Name: "rootfs", URL: tt.url})
			if tt.fragment == "" {
				if err != nil {
					t.Fatal(err)
				}
				st.Close()
				return
			}
			assertErr(t, err, failure.SourceForbidden, true, tt.fragment)
			if count.Load() != 0 {
				t.Fatal("a refused URL reached the network")
			}
		})
	}
}

func TestDataSources(t *testing.T) {
	data := []byte("configmap layer")
	f, _ := fetcher(Options{MaxBytes: 100})
	tests := []struct {
		spec     Spec
		kind     Kind
		reason   failure.Reason
		fragment string
	}{
		{spec: Spec{Name: "app", Data: data, DataKind: KindConfigMap, DataRef: "configMap app-files key app.tar.gz"}, kind: KindConfigMap},
		{spec: Spec{Name: "app", Data: data, DataKind: KindSecret, DataRef: "secret creds key layer.tar", Digest: testkit.Digest(data)}, kind: KindSecret},
		{spec: Spec{Name: "app", Data: data}, kind: KindBytes},
		// The kind is what the caller says, never read from the message.
		{spec: Spec{Name: "ref", Data: data, DataRef: "secret s key k"}, kind: KindBytes},
		{spec: Spec{Name: "empty", Data: []byte{}, DataKind: KindConfigMap, DataRef: "configMap c key k"}, kind: KindConfigMap},
		{spec: Spec{Name: "app", Data: data, DataRef: "configMap app-files key app.tar.gz", Digest: testkit.Digest([]byte("x"))},
			reason: failure.DigestMismatch, fragment: `layer "app": fetched bytes have digest ` + testkit.Digest(data) + ", spec declares " + testkit.Digest([]byte("x"))},
		{spec: Spec{Name: "big", Data: make([]byte, 101), DataRef: "configMap big key k"},
			reason: failure.LimitExceeded, fragment: `layer "big": configMap big key k is larger than the limit of 100 bytes (100 B)`},
	}
	for _, tt := range tests {
		t.Run(tt.spec.Name+"/"+string(tt.kind), func(t *testing.T) {
			got, st, err := readAll(t, f, tt.spec)
			if tt.fragment != "" {
				assertErr(t, err, tt.reason, true, tt.fragment)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.spec.Data) || st.Kind() != tt.kind || st.Digest().String() != testkit.Digest(tt.spec.Data) {
				t.Fatalf("got %q kind %s digest %s", got, st.Kind(), st.Digest())
			}
		})
	}
}

func TestSpecValidation(t *testing.T) {
	f, _ := fetcher(Options{})
	tests := []struct {
		spec     Spec
		reason   failure.Reason
		fragment string
	}{
		{Spec{Name: "l"}, failure.InvalidSpec, `layer "l": source must set exactly one of url, blob, configMap/secret data (0 set)`},
		{Spec{Name: "l", URL: "http://x", Data: []byte("x")}, failure.InvalidSpec, "(2 set)"},
		{Spec{Name: "l", Data: []byte("x"), Digest: "md5:abc"}, failure.InvalidSpec, `layer "l": digest "md5:abc" is not a sha256 digest`},
		{Spec{Name: "l", Data: []byte("x"), DataKind: KindURL}, failure.InvalidSpec, `layer "l": data kind "url" does not describe this source`},
		{Spec{Name: "l", URL: "https://x/y.tar", DataKind: KindSecret}, failure.InvalidSpec, `layer "l": data kind "secret" does not describe this source`},
		{Spec{Name: "l", Data: []byte("x"), Digest: "sha256:xyz"}, failure.InvalidSpec, "is not a sha256 digest"},
		{Spec{Name: "l", URL: "http://[::1"}, failure.InvalidSpec, `layer "l": invalid URL`},
		{Spec{Name: "l", Blob: "registry.example/repo:latest"}, failure.InvalidSpec, `blob "registry.example/repo:latest" is not a digest reference`},
		{Spec{Name: "l", Blob: "registry.example/repo@" + testkit.Digest([]byte("a")), Digest: testkit.Digest([]byte("b"))}, failure.InvalidSpec,
			"spec declares digest " + testkit.Digest([]byte("b")) + " but blob reference pins " + testkit.Digest([]byte("a"))},
		{Spec{Name: "l", Blob: "169.254.169.254/repo@" + testkit.Digest([]byte("a"))}, failure.SourceForbidden, "refusing blob 169.254.169.254/repo@"},
	}
	for _, tt := range tests {
		_, err := f.Open(context.Background(), tt.spec)
		assertErr(t, err, tt.reason, true, tt.fragment)
	}
}

func TestContextCancelledWhileWaiting(t *testing.T) {
	srv, _ := server(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	ctx, cancel := context.WithCancel(context.Background())
	f := NewFetcher(Options{Sleep: func(ctx context.Context, d time.Duration) error {
		cancel()
		return retry.Sleep(ctx, d)
	}})
	_, err := f.Open(ctx, Spec{Name: "rootfs", URL: srv.URL})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), `layer "rootfs": waiting to retry`) {
		t.Fatalf("err = %v", err)
	}
}

func TestStreamContextCancelled(t *testing.T) {
	srv, _ := stallingServer(t, func(int) bool { return true }, []byte("abc"))
	ctx, cancel := context.WithCancel(context.Background())
	f, _ := fetcher(Options{})
	st, err := f.Open(ctx, Spec{Name: "rootfs", URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	io.ReadFull(st, make([]byte, 3))
	go cancel()
	_, err = st.Read(make([]byte, 10))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel = %v", err)
	}
}

func TestBlobSource(t *testing.T) {
	host := testkit.NewRegistry(t).Host
	repo, err := name.NewRepository(host + "/team/artifacts")
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("blob content "), 50000)
	layer := static.NewLayer(content, types.OCILayer)
	if err := remote.WriteLayer(repo, layer); err != nil {
		t.Fatal(err)
	}
	d, _ := layer.Digest()

	f, rs := fetcher(Options{Transport: http.DefaultTransport})
	got, st, err := readAll(t, f, Spec{Name: "artifacts", Blob: repo.String() + "@" + d.String()})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) || st.Digest() != d || st.Kind() != KindBlob {
		t.Fatalf("got %d bytes, digest %s, kind %s", len(got), st.Digest(), st.Kind())
	}

	missing := testkit.Digest([]byte("missing"))
	_, err = f.Open(context.Background(), Spec{Name: "artifacts", Blob: repo.String() + "@" + missing})
	assertErr(t, err, failure.SourceNotFound, true, `layer "artifacts": GET blob `+repo.String()+"@"+missing)
	if len(rs.got()) != 0 {
		t.Fatalf("slept %v", rs.got())
	}
}

// A registry serving bytes that do not match the digest in the reference.
func TestBlobSourceCorrupt(t *testing.T) {
	srv, _ := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Write([]byte("tampered"))
	})
	host := strings.TrimPrefix(srv.URL, "http://")
	want := testkit.Digest([]byte("original"))
	f, _ := fetcher(Options{Transport: http.DefaultTransport})
	_, _, err := readAll(t, f, Spec{Name: "artifacts", Blob: host + "/repo@" + want})
	assertErr(t, err, failure.DigestMismatch, true, "fetched bytes have digest "+testkit.Digest([]byte("tampered"))+", spec declares "+want)
}

func BenchmarkStreamData(b *testing.B) {
	data := make([]byte, 64<<20)
	f := NewFetcher(Options{})
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		st, err := f.Open(context.Background(), Spec{Name: "b", Data: data})
		if err != nil {
			b.Fatal(err)
		}
		io.CopyBuffer(io.Discard, st, buf)
	}
}

func BenchmarkStreamHTTP(b *testing.B) {
	data := make([]byte, 64<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(data) }))
	defer srv.Close()
	f := NewFetcher(Options{})
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		st, err := f.Open(context.Background(), Spec{Name: "b", URL: srv.URL, Digest: testkit.Digest(data)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, st, buf); err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
}

func TestConditionalGet(t *testing.T) {
	body := []byte("layer bytes")
	var gets int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets++
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	f := NewFetcher(Options{})
	st, err := f.Open(context.Background(), Spec{Name: "l", URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(st); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	v := st.Validators()
	if v.ETag != `"v1"` {
		t.Fatalf("validators = %+v", v)
	}
	if _, err := f.Open(context.Background(), Spec{Name: "l", URL: srv.URL, Validators: v}); !errors.Is(err, ErrNotModified) {
		t.Fatalf("conditional GET: err = %v, want ErrNotModified", err)
	}
	if gets != 2 {
		t.Errorf("requests = %d, want 2 (no retry of a 304)", gets)
	}
}

// A blob registry naming a forbidden token realm or redirecting the blob to
// a metadata address: one permanent SourceForbidden naming the host, no
// retry, with the caller's transport and with the default one.
func TestBlobSourceForbiddenRealmAndRedirect(t *testing.T) {
	digest := testkit.Digest([]byte("blob"))
	tests := []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request)
		want    string
	}{
		{"realm metadata name", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://metadata.google.internal/token",service="s"`)
			w.WriteHeader(http.StatusUnauthorized)
		}, `token realm http://metadata.google.internal/token named by 127.0.0.1:`},
		{"realm link-local", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="https://[fe80::1]/token"`)
			w.WriteHeader(http.StatusUnauthorized)
		}, `host "fe80::1" resolves to link-local`},
		{"redirect to metadata", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/" {
				return
			}
			http.Redirect(w, r, "http://169.254.169.254/bucket/blob?X-Amz-Signature=s3cr3t", http.StatusFound)
		}, `redirect from http://127.0.0.1:`},
	}
	for _, tt := range tests {
		for _, transport := range []http.RoundTripper{nil, http.DefaultTransport} {
			t.Run(fmt.Sprintf("%s/injected=%v", tt.name, transport != nil), func(t *testing.T) {
				srv, count := server(t, func(_ int, w http.ResponseWriter, r *http.Request) { tt.handler(w, r) })
				host := strings.TrimPrefix(srv.URL, "http://")
				f, rs := fetcher(Options{Transport: transport})
				_, err := f.Open(context.Background(), Spec{Name: "artifacts", Blob: host + "/repo@" + digest})
				assertErr(t, err, failure.SourceForbidden, true, tt.want)
				assertErr(t, err, failure.SourceForbidden, true, `layer "artifacts"`)
				if strings.Contains(err.Error(), "s3cr3t") || len(rs.got()) != 0 || count.Load() > 2 {
					t.Fatalf("err %v, sleeps %v, requests %d", err, rs.got(), count.Load())
				}
			})
		}
	}
}

// An untrusted certificate fails the same way on every attempt: permanent,
// not retried.
func TestURLUntrustedCertificateIsPermanent(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("x")) }))
	srv.Config.ErrorLog = nopLogger()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f, rs := fetcher(Options{})
	_, err := f.Open(context.Background(), Spec{Name: "rootfs", URL: srv.URL + "/x.tar?token=secret"})
	assertErr(t, err, failure.InvalidSpec, true, `layer "rootfs": GET `+srv.URL+`/x.tar: tls: failed to verify certificate: x509: certificate signed by unknown authority: the server's certificate is not trusted`)
	if strings.Contains(err.Error(), "secret") || len(rs.got()) != 0 {
		t.Fatalf("err %v, sleeps %v", err, rs.got())
	}
}
