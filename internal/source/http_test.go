package source

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-build/kiln/internal/failure"
)

// headerRecorder serves "final" and records the headers of each request to
// /final.
type headerRecorder struct {
	mu  sync.Mutex
	got []http.Header
}

func (h *headerRecorder) last() http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) == 0 {
		return nil
	}
	return h.got[len(h.got)-1]
}

// redirectServers starts two servers on 127.0.0.1 (so they differ only in
// port): /to-same, /to-other and /via-other on the origin redirect to the
// origin's /final, the other's /final, and the other's /back (which sends
// the client back to the origin's /final).
func redirectServers(t *testing.T) (origin, other *httptest.Server, rec *headerRecorder) {
	t.Helper()
	rec = &headerRecorder{}
	final := func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.got = append(rec.got, r.Header.Clone())
		rec.mu.Unlock()
		io.WriteString(w, "final")
	}
	other = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/final":
			final(w, r)
		case "/back":
			http.Redirect(w, r, origin.URL+"/final", http.StatusFound)
		}
	}))
	t.Cleanup(other.Close)
	origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/final":
			final(w, r)
		case "/to-same":
			http.Redirect(w, r, "/final", http.StatusFound)
		case "/to-other":
			http.Redirect(w, r, other.URL+"/final", http.StatusFound)
		case "/via-other":
			http.Redirect(w, r, other.URL+"/back", http.StatusFound)
		}
	}))
	t.Cleanup(origin.Close)
	return origin, other, rec
}

// headersFrom headers follow a redirect on the same origin only; no hop
// carries a Referer (it would hold the first URL's query).
func TestURLRedirectHeaders(t *testing.T) {
	origin, _, rec := redirectServers(t)
	tenant := map[string]string{"X-Api-Token": "t0k3n", "Authorization": "Bearer abc", "User-Agent": "tenant-agent"}
	tests := []struct {
		name       string
		path       string
		keep       bool
		wantAgent  string
		wantHeader string // X-Api-Token at /final
	}{
		{"same origin keeps them", "/to-same", true, "tenant-agent", "t0k3n"},
		{"another port drops them", "/to-other", false, userAgent, ""},
		{"coming back does not restore them", "/via-other", false, userAgent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := fetcher(Options{})
			got, _, err := readAll(t, f, Spec{Name: "rootfs", URL: origin.URL + tt.path + "?X-Amz-Signature=SECRET", Headers: tenant})
			if err != nil || string(got) != "final" {
				t.Fatalf("got %q, %v", got, err)
			}
			h := rec.last()
			if v := h.Get("X-Api-Token"); v != tt.wantHeader {
				t.Errorf("X-Api-Token = %q, want %q", v, tt.wantHeader)
			}
			if v := h.Get("Authorization"); (v != "") != tt.keep {
				t.Errorf("Authorization = %q, keep = %v", v, tt.keep)
			}
			if v := h.Get("User-Agent"); v != tt.wantAgent {
				t.Errorf("User-Agent = %q, want %q", v, tt.wantAgent)
			}
			if v := h.Get("Referer"); v != "" {
				t.Errorf("Referer = %q, want none", v)
			}
			if v := h.Get("Accept-Encoding"); v != "identity" {
				t.Errorf("Accept-Encoding = %q, want identity", v)
			}
		})
	}
}

// A tenant header named like one of kiln's own cannot displace it, and is
// not counted as the tenant's (so a redirect keeps kiln's value).
func TestURLRequestHeaderPrecedence(t *testing.T) {
	s := Spec{Name: "l", URL: "http://h/x", Validators: Validators{ETag: `"v1"`},
		Headers: map[string]string{"accept-encoding": "gzip", "If-None-Match": `"forged"`, "X-Token": "t"}}
	req, err := newURLRequest(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if req.Header.Get("Accept-Encoding") != "identity" || req.Header.Get("If-None-Match") != `"v1"` || req.Header.Get("X-Token") != "t" {
		t.Errorf("headers = %v", req.Header)
	}
	dropTenantHeaders(req)
	if req.Header.Get("Accept-Encoding") != "identity" || req.Header.Get("If-None-Match") != `"v1"` || req.Header.Get("X-Token") != "" {
		t.Errorf("after a cross-origin redirect: %v", req.Header)
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestOrigin(t *testing.T) {
	tests := []struct{ a, b string }{
		{"http://h/x", "http://H:80/y?q"},
		{"https://h/x", "https://h:443/"},
	}
	for _, tt := range tests {
		if origin(mustURL(t, tt.a)) != origin(mustURL(t, tt.b)) {
			t.Errorf("%s and %s should be one origin", tt.a, tt.b)
		}
	}
	differ := []struct{ a, b string }{
		{"http://h/x", "https://h/x"},
		{"http://h/x", "http://h:8080/x"},
		{"http://h/x", "http://h.evil/x"},
	}
	for _, tt := range differ {
		if origin(mustURL(t, tt.a)) == origin(mustURL(t, tt.b)) {
			t.Errorf("%s and %s should be different origins", tt.a, tt.b)
		}
	}
}

// An error body that echoes the request (as S3's SignatureDoesNotMatch
// does) must not carry the URL's userinfo or query, or a header value, into
// the message.
func TestErrorBodyIsScrubbed(t *testing.T) {
	long := strings.Repeat(" ", 490) // shrinks to nothing when made one line
	tests := []struct {
		name string
		body func(r *http.Request) string
	}{
		{"echoed query and header", func(r *http.Request) string {
			return fmt.Sprintf("<Error><SignatureProvided>%s</SignatureProvided><Q>%s</Q><H>%s</H></Error>",
				r.URL.Query().Get("X-Amz-Signature"), r.URL.RawQuery, r.Header.Get("X-Api-Token"))
		}},
		{"echoed userinfo", func(r *http.Request) string {
			u, p, _ := r.BasicAuth()
			return "denied for " + u + " with " + p
		}},
		{"secret cut by the read limit", func(r *http.Request) string {
			return long + " SIG=" + r.URL.Query().Get("X-Amz-Signature")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, tt.body(r))
			})
			f, _ := fetcher(Options{})
			u := strings.Replace(srv.URL, "http://", "http://tenant-user:pa55w0rd@", 1) +
				"/x.tar?X-Amz-Credential=AKIAEXAMPLE%2F20240101&X-Amz-Signature=SECRETSIGNATURE0123456789"
			_, err := f.Open(t.Context(), Spec{Name: "rootfs", URL: u, Headers: map[string]string{"X-Api-Token": "t0k3nvalue"}})
			assertErr(t, err, failure.Unauthorized, true, "403 Forbidden")
			for _, secret := range []string{"tenant-user", "pa55w0rd", "AKIAEXAMPLE", "SECRETSIG", "t0k3n"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error carries %q: %v", secret, err)
				}
			}
		})
	}
}
