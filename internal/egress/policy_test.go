package egress_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/egress/egresstest"
)

func TestCheckURL(t *testing.T) {
	src := egress.SourcePolicy([]string{"files.example", "169.254.0.1", "[fe80::1]:8080"})
	reg := egress.RegistryPolicy([]string{"imds.internal", "169.254.0.1"})
	var none egress.Policy
	tests := []struct {
		name   string
		policy egress.Policy
		url    string
		want   string // "" = allowed
	}{
		{"metadata IP", none, "http://169.254.169.254/latest/", `host "169.254.169.254" resolves to link-local or metadata address 169.254.169.254`},
		{"link-local v6 with zone", none, "http://[fe80::1%25eth0]:8080/x", `host "fe80::1%eth0" resolves to link-local or metadata address fe80::1`},
		{"v4-mapped link-local", none, "http://[::ffff:169.254.1.1]/x", "metadata address 169.254.1.1"},
		{"AWS IMDS v6", none, "http://[fd00:ec2::254]/x", "metadata address fd00:ec2::254"},
		{"Alibaba metadata", none, "http://100.100.100.200/x", "metadata address 100.100.100.200"},
		{"GCE name", none, "http://metadata.google.internal/computeMetadata/v1/", `host "metadata.google.internal" is a cloud metadata endpoint`},
		{"name case and dot", none, "http://METADATA.google.internal./x", "cloud metadata endpoint"},
		{"scheme", none, "ftp://example.com/x", `scheme "ftp" is not allowed (http or https)`},
		{"no host", none, "http:///x", "URL has no host"},
		{"public", none, "https://registry.example/v2/", ""},
		{"loopback", none, "http://127.0.0.1:5000/v2/", ""},
		{"source: not listed", src, "https://other.example/x", `host "other.example" is not in the allowed hosts`},
		{"source: listed", src, "https://FILES.example:443/x", ""},
		{"source: listed link-local", src, "http://169.254.0.1/x", ""},
		{"source: listed host:port only", src, "http://[fe80::1]:8080/x", ""},
		{"source: host:port listed, other port", src, "http://[fe80::1]:9/x", "is not in the allowed hosts"},
		{"registry: not listed is allowed", reg, "https://other.example/v2/", ""},
		{"registry: listed link-local", reg, "http://169.254.0.1/v2/", ""},
		{"registry: unlisted link-local", reg, "http://169.254.169.254/v2/", "link-local"},
		{"registry: metadata name", reg, "http://metadata.goog/v2/", "cloud metadata endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.policy.CheckURL(u)
			assertForbidden(t, err, tt.want)
		})
	}
}

func assertForbidden(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	if _, ok := egress.AsForbidden(err); !ok || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want a ForbiddenError containing %q", err, want)
	}
}

// A listener that counts the connections it accepted.
func countingListener(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, &n
}

// Names resolving to forbidden addresses are refused after resolution,
// before connect: the error is the policy's, not a network timeout.
func TestDialContextChecksResolvedAddress(t *testing.T) {
	port, accepted := countingListener(t)
	res := egresstest.NewResolver(map[string]netip.Addr{
		"rebind.test":  netip.MustParseAddr("169.254.169.254"),
		"rebind6.test": netip.MustParseAddr("fe80::1"),
		"ok.test":      netip.MustParseAddr("127.0.0.1"),
		"listed.test":  netip.MustParseAddr("169.254.169.254"),
	})
	p := egress.RegistryPolicy([]string{"listed.test"}).WithResolver(res.Resolver)
	dial := p.DialContext(&net.Dialer{Timeout: 2 * time.Second})
	tests := []struct{ addr, want string }{
		{"rebind.test:" + port, `host "rebind.test" resolves to link-local or metadata address 169.254.169.254`},
		{"rebind6.test:" + port, `host "rebind6.test" resolves to link-local or metadata address fe80::1`},
		{"169.254.169.254:80", `host "169.254.169.254" resolves to link-local`},
		{"[fe80::1]:80", `host "fe80::1" resolves to link-local`},
		{"ok.test:" + port, ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			c, err := dial(context.Background(), "tcp", tt.addr)
			if err == nil {
				io.Copy(io.Discard, c) // until the listener, having counted it, closes it
				c.Close()
			}
			assertForbidden(t, err, tt.want)
		})
	}
	if accepted.Load() != 1 {
		t.Fatalf("accepted %d connections, want 1 (ok.test)", accepted.Load())
	}
	if res.Lookups.Load() == 0 {
		t.Fatal("the fake resolver was not used")
	}
	// Listed by name: exempt although it resolves to a link-local address.
	if err := p.CheckAddr("listed.test", netip.MustParseAddr("169.254.169.254")); err != nil {
		t.Fatalf("listed host refused: %v", err)
	}
}

// The RoundTripper vets request URLs, redirects and the realms 401s name,
// and never lets a refused request reach the inner transport.
func TestRoundTripper(t *testing.T) {
	var realm atomic.Value
	realm.Store("")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
			w.Header().Set("WWW-Authenticate", realm.Load().(string))
			w.WriteHeader(http.StatusUnauthorized)
		case "/uploads/":
			w.Header().Set("Location", "http://[fe80::1]/session?sig=secret")
			w.WriteHeader(http.StatusAccepted)
		case "/uploads/relative":
			w.Header().Set("Location", "/uploads/session?_state=x")
			w.WriteHeader(http.StatusAccepted)
		case "/redirect":
			http.Redirect(w, r, "http://169.254.169.254/blob?X-Amz-Signature=secret", http.StatusTemporaryRedirect)
		default:
			w.Write([]byte("ok"))
		}
	}))
	t.Cleanup(srv.Close)
	inner := &countingRT{inner: http.DefaultTransport}
	c := &http.Client{Transport: egress.RegistryPolicy(nil).RoundTripper(inner)}

	tests := []struct {
		name, path, realm string
		sent              int64 // requests the inner transport saw
		want              string
	}{
		{"realm metadata IP", "/v2/", `Bearer realm="http://169.254.169.254/token?sig=x",service="r"`, 1,
			`token realm http://169.254.169.254/token named by ` + strings.TrimPrefix(srv.URL, "http://") + `: host "169.254.169.254" resolves to link-local`},
		{"realm metadata name", "/v2/", `Bearer service="r", realm="https://metadata.google.internal/t"`, 1, "cloud metadata endpoint"},
		{"realm escaped", "/v2/", `Bearer realm="http://169.254.169.25\4/t"`, 1, "169.254.169.254"},
		{"realm unquoted", "/v2/", `Bearer realm=http://[fe80::1]/t`, 1, "link-local"},
		{"realm in second challenge", "/v2/", `Basic realm="x", Bearer REALM = "http://169.254.169.254/t"`, 1, "link-local"},
		{"realm allowed", "/v2/", `Bearer realm="https://auth.example/token"`, 1, ""},
		{"basic realm is text", "/v2/", `Basic realm="Registry Realm"`, 1, ""},
		{"redirect", "/redirect", "", 1, `redirect from ` + srv.URL + `/redirect: host "169.254.169.254" resolves`},
		{"upload location", "/uploads/", "", 1, `location http://[fe80::1]/session named by ` + srv.URL + `/uploads/: host "fe80::1" resolves to link-local`},
		{"relative upload location", "/uploads/relative", "", 1, ""},
		{"plain", "/blob", "", 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			realm.Store(tt.realm)
			inner.n.Store(0)
			resp, err := c.Get(srv.URL + tt.path)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			assertForbidden(t, err, tt.want)
			if fe, ok := egress.AsForbidden(err); ok && strings.Contains(fe.Error(), "secret") {
				t.Fatalf("refusal shows the redirect's query: %v", fe)
			}
			if inner.n.Load() != tt.sent {
				t.Fatalf("inner transport saw %d requests, want %d", inner.n.Load(), tt.sent)
			}
		})
	}
	inner.n.Store(0)
	_, err := c.Get("http://169.254.169.254/v2/")
	assertForbidden(t, err, "link-local")
	if inner.n.Load() != 0 {
		t.Fatal("a refused URL reached the inner transport")
	}
}

type countingRT struct {
	inner http.RoundTripper
	n     atomic.Int64
}

func (c *countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.inner.RoundTrip(r)
}

func TestCheckRedirect(t *testing.T) {
	tooMany := errors.New("too many")
	check := egress.SourcePolicy(nil).CheckRedirect(2, tooMany, nil)
	prev, _ := http.NewRequest(http.MethodGet, "https://files.example/a?token=secret", nil)
	next, _ := http.NewRequest(http.MethodGet, "http://metadata/x", nil)
	err := check(next, []*http.Request{prev})
	assertForbidden(t, err, `redirect from https://files.example/a: host "metadata" is a cloud metadata endpoint`)
	ok, _ := http.NewRequest(http.MethodGet, "https://cdn.example/x", nil)
	if err := check(ok, []*http.Request{prev, prev, prev}); !errors.Is(err, tooMany) {
		t.Fatalf("err = %v, want too many", err)
	}
	if err := check(ok, []*http.Request{prev}); err != nil {
		t.Fatal(err)
	}
}
