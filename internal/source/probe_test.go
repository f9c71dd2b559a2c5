package source

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

// fileWithToken serves body like a static file server (ETag, Last-Modified,
// 304 for matching conditions) to requests carrying the token, and counts
// how many body bytes it managed to write.
func fileWithToken(t *testing.T, body []byte, token string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var written atomic.Int64
	srv, _ := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(countingWriter{w, &written}, r, "x.tar", time.Unix(1700000000, 0), bytes.NewReader(body))
	})
	return srv, &written
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func TestProveURL(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 8<<20) // far more than one read-ahead
	srv, _ := fileWithToken(t, body, "t0ken")
	auth := map[string]string{"Authorization": "Bearer t0ken"}
	tests := []struct {
		name    string
		spec    Spec
		want    Proof
		reason  failure.Reason
		fragmnt string
	}{
		{name: "conditional answered 304", spec: Spec{Headers: auth, Validators: Validators{ETag: `"v1"`}},
			want: Proof{NotModified: true, Length: -1}},
		{name: "stale validators answered 200 with the headers", spec: Spec{Headers: auth, Validators: Validators{ETag: `"v0"`}},
			want: Proof{Validators: Validators{ETag: `"v1"`, LastModified: "Tue, 14 Nov 2023 22:13:20 GMT"}, Length: int64(len(body))}},
		{name: "no validators answered 200", spec: Spec{Headers: auth},
			want: Proof{Validators: Validators{ETag: `"v1"`, LastModified: "Tue, 14 Nov 2023 22:13:20 GMT"}, Length: int64(len(body))}},
		{name: "someone else's validators without the header", spec: Spec{Validators: Validators{ETag: `"v1"`}},
			reason: failure.Unauthorized, fragmnt: `layer "l": GET ` + srv.URL + "/x.tar: 401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := fetcher(Options{})
			s := tt.spec
			s.Name, s.URL = "l", srv.URL+"/x.tar?sig=secret"
			got, err := f.ProveURL(context.Background(), s)
			if tt.reason != "" {
				assertErr(t, err, tt.reason, true, tt.fragmnt)
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error shows the query: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("proof = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// A proof reads headers only: an 8 MiB body is not downloaded.
func TestProveURLDoesNotDownload(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 64<<20)
	srv, written := fileWithToken(t, body, "")
	f, _ := fetcher(Options{})
	if _, err := f.ProveURL(context.Background(), Spec{Name: "l", URL: srv.URL + "/x.tar"}); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if n := written.Load(); n > int64(len(body))/4 {
		t.Errorf("server wrote %d of %d body bytes for a proof", n, len(body))
	}
}

// An unreachable server is a (transient) error, never a proof.
func TestProveURLUnreachable(t *testing.T) {
	f, rs := fetcher(Options{Retries: 2})
	_, err := f.ProveURL(context.Background(), Spec{Name: "l", URL: "http://127.0.0.1:1/x.tar", Validators: Validators{ETag: `"v1"`}})
	assertErr(t, err, failure.Transient, false, "connection refused")
	if len(rs.got()) != 2 {
		t.Errorf("retries: slept %v, want 2 waits", rs.got())
	}
	_, err = f.ProveURL(context.Background(), Spec{Name: "l", URL: "http://169.254.169.254/x.tar"})
	assertErr(t, err, failure.SourceForbidden, true, "refusing")
}

func TestProveBlob(t *testing.T) {
	host := testkit.NewRegistry(t).Host
	repo, err := name.NewRepository(host + "/team/artifacts")
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("blob content")
	layer := static.NewLayer(content, types.OCILayer)
	if err := remote.WriteLayer(repo, layer); err != nil {
		t.Fatal(err)
	}
	d, _ := layer.Digest()
	f, _ := fetcher(Options{Transport: http.DefaultTransport})
	got, err := f.ProveBlob(context.Background(), Spec{Name: "a", Blob: repo.String() + "@" + d.String()})
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != d.String() || got.Length != int64(len(content)) {
		t.Errorf("proof = %+v, want digest %s length %d", got, d, len(content))
	}
	missing := testkit.Digest([]byte("missing"))
	_, err = f.ProveBlob(context.Background(), Spec{Name: "a", Blob: repo.String() + "@" + missing})
	assertErr(t, err, failure.SourceNotFound, true, `layer "a": HEAD blob `+repo.String()+"@"+missing)

	denied, _ := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	})
	blob := strings.TrimPrefix(denied.URL, "http://") + "/team/artifacts@" + d.String()
	_, err = f.ProveBlob(context.Background(), Spec{Name: "a", Blob: blob})
	assertErr(t, err, failure.Unauthorized, true, `layer "a": HEAD blob `+blob)
}

func TestHeadersID(t *testing.T) {
	a := HeadersID(map[string]string{"Authorization": "Bearer a", "X-Team": "a"})
	tests := []struct {
		name string
		h    map[string]string
		same bool
	}{
		{"same headers, other spelling", map[string]string{"x-team": "a", "authorization": "Bearer a"}, true},
		{"other token", map[string]string{"Authorization": "Bearer b", "X-Team": "a"}, false},
		{"value moved between headers", map[string]string{"Authorization": "Bearer ax", "X-Team": ""}, false},
		{"no headers", nil, false},
	}
	for _, tt := range tests {
		if got := HeadersID(tt.h) == a; got != tt.same {
			t.Errorf("%s: equal = %v, want %v", tt.name, got, tt.same)
		}
	}
	if strings.Contains(a, "Bearer") || HeadersID(nil) != HeadersID(map[string]string{}) {
		t.Errorf("HeadersID = %q", a)
	}
}

func TestCredentialID(t *testing.T) {
	blob := "registry.example/team/a@" + testkit.Digest([]byte("x"))
	id := func(kc authn.Keychain) string {
		t.Helper()
		f, _ := fetcher(Options{Keychain: kc})
		got, err := f.CredentialID(context.Background(), Spec{Name: "a", Blob: blob})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	alice := id(staticKeychain{authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "pw"})})
	bob := id(staticKeychain{authn.FromConfig(authn.AuthConfig{Username: "bob", Password: "pw"})})
	anon := id(staticKeychain{authn.Anonymous})
	if alice == bob || alice == anon || bob == anon {
		t.Errorf("credential IDs collide: alice %s bob %s anonymous %s", alice, bob, anon)
	}
	if again := id(staticKeychain{authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "pw"})}); again != alice {
		t.Errorf("same credentials, IDs %s and %s", alice, again)
	}
	if strings.Contains(alice, "alice") {
		t.Errorf("ID shows the user: %s", alice)
	}
}

type staticKeychain struct{ a authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }
