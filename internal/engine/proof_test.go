package engine

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/source"
	"github.com/kiln-build/kiln/internal/testkit"
)

func noSleep(context.Context, time.Duration) error { return nil }

// proofEngine is an engine whose fetches retry once without waiting.
func proofEngine(t *testing.T) *Engine {
	t.Helper()
	e := newEngine(t, "")
	e.Source = source.Options{Retries: 1, Sleep: noSleep}
	return e
}

func assertFailure(t *testing.T, err error, reason failure.Reason, fragment string) {
	t.Helper()
	if err == nil {
		t.Fatalf("build succeeded, want %s %q", reason, fragment)
	}
	if got := failure.ReasonOf(err); got != reason {
		t.Errorf("error %q: reason %s, want %s", err, got, reason)
	}
	if !strings.Contains(err.Error(), fragment) {
		t.Errorf("error %q does not contain %q", err, fragment)
	}
}

// The scenario: team-a builds from its own Secret; team-b pins the
// digest of those bytes on sources that cannot deliver them. None of them
// may be served team-a's cached layer, and nothing of team-b's is pushed.
func TestAnotherTenantsSecretLayerIsNotReusedByDigest(t *testing.T) {
	reg := testkit.NewRegistry(t)
	engine := proofEngine(t)
	// xz, so neither the pushed blob (re-encoded as gzip) nor the diffID
	// equals the sha256 of the Secret bytes.
	secret := testkit.Xz(t, testkit.Tar(t, testkit.File("key", "team-a private key")))
	digest := testkit.Digest(secret)
	a := imageBuild("a", reg.Host+"/team-a/app:1",
		kilnv1.Layer{Name: "s", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "layer", Key: "l.tar.xz"}}})
	res, err := engine.Build(context.Background(), a, Inputs{Secrets: map[string]map[string][]byte{"layer": {"l.tar.xz": secret}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Status.Layers[0].SourceDigest; got != "secret:layer/l.tar.xz" {
		t.Errorf("status sourceDigest = %q, want secret:layer/l.tar.xz", got)
	}
	if res.Status.InputDigest == InputDigest(&a.Spec, "", []string{digest}) {
		t.Error("inputDigest hashes the sha256 of the Secret bytes: it confirms a guess of them")
	}
	st, _ := json.Marshal(res.Status)
	if strings.Contains(string(st), strings.TrimPrefix(digest, "sha256:")) {
		t.Errorf("status shows the sha256 of the Secret bytes: %s", st)
	}

	junk := testkit.Xz(t, testkit.Tar(t, testkit.File("key", "team-b's guess")))
	attacks := []struct {
		name     string
		layer    kilnv1.Layer
		in       Inputs
		reason   failure.Reason
		fragment string
	}{
		{"URL that leads nowhere", kilnv1.Layer{Source: &kilnv1.Source{URL: "http://127.0.0.1:1/x.tar"}, Digest: digest},
			Inputs{}, failure.Transient, "connection refused"},
		{"own ConfigMap with other bytes", kilnv1.Layer{Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "cm", Key: "k"}}, Digest: digest},
			Inputs{ConfigMaps: map[string]map[string][]byte{"cm": {"k": junk}}}, failure.DigestMismatch, "spec declares " + digest},
		{"blob its registry does not hold", kilnv1.Layer{Source: &kilnv1.Source{Blob: reg.Host + "/team-b/x@" + digest}},
			Inputs{}, failure.SourceNotFound, "GET blob " + reg.Host + "/team-b/x@" + digest},
	}
	for _, tt := range attacks {
		t.Run(tt.name, func(t *testing.T) {
			reg.Reset()
			tt.layer.Name = "s"
			b := imageBuild("b", reg.Host+"/team-b/app:1", tt.layer)
			res, err := engine.Build(context.Background(), b, tt.in, Options{})
			assertFailure(t, err, tt.reason, tt.fragment)
			if res != nil || reg.Writes() != 0 {
				t.Errorf("team-b's build wrote %d times to the registry", reg.Writes())
			}
		})
	}
}

// authFileServer serves one body with an ETag to requests whose
// Authorization is accepted, and records every request.
type authFileServer struct {
	srv *httptest.Server

	mu       sync.Mutex
	body     []byte
	etag     string
	accepted map[string]bool
	// ignoreConditions answers 200 to conditional requests, as servers
	// without validator support do.
	ignoreConditions bool
	// hold, when set, is called before a request is answered.
	hold func(r *http.Request)
	seen []seenRequest
}

type seenRequest struct {
	path, auth, ifNoneMatch string
}

func newAuthFileServer(t *testing.T, body []byte, tokens ...string) *authFileServer {
	t.Helper()
	s := &authFileServer{body: body, etag: `"v1"`, accepted: map[string]bool{}}
	for _, tok := range tokens {
		s.accepted["Bearer "+tok] = true
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *authFileServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	body, etag, ok, ignore, hold := s.body, s.etag, s.accepted[r.Header.Get("Authorization")], s.ignoreConditions, s.hold
	s.mu.Unlock()
	if hold != nil {
		hold(r)
	}
	// Recorded before the response is written: the client can finish its
	// build before this handler returns, and the test reads the list then.
	s.mu.Lock()
	s.seen = append(s.seen, seenRequest{path: r.URL.Path, auth: r.Header.Get("Authorization"), ifNoneMatch: r.Header.Get("If-None-Match")})
	s.mu.Unlock()
	rec := &testkit.StatusRecorder{ResponseWriter: w}
	switch {
	case !ok:
		http.Error(rec, "credentials required", http.StatusUnauthorized)
	default:
		if ignore {
			r.Header.Del("If-None-Match")
			r.Header.Del("If-Modified-Since")
		}
		w.Header().Set("ETag", etag)
		http.ServeContent(rec, r, "x.tar", time.Unix(1700000000, 0), bytes.NewReader(body))
	}
}

func (s *authFileServer) requests() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenRequest(nil), s.seen...)
}

func (s *authFileServer) set(f func(s *authFileServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// urlBuild is one URL layer fetched with "Authorization: Bearer token"
// (none when token is empty), pinned to digest when it is set.
func urlBuild(name, target, url, digest, token string) (*kilnv1.ImageBuild, Inputs) {
	l := kilnv1.Layer{Name: "l", Source: &kilnv1.Source{URL: url}, Digest: digest}
	var in Inputs
	if token != "" {
		l.Source.HeadersFrom = &kilnv1.LocalObjectReference{Name: "hdr"}
		in.Secrets = map[string]map[string][]byte{"hdr": {"Authorization": []byte("Bearer " + token)}}
	}
	return imageBuild(name, target, l), in
}

// A build may reuse a layer another build fetched from the same URL only
// after its own request (its own headers) is answered, pinned or not.
func TestURLLayerReuseNeedsOwnProof(t *testing.T) {
	tarBytes := testkit.Tar(t, testkit.File("data", strings.Repeat("private ", 4096)))
	tests := []struct {
		name   string
		mutate func(s *authFileServer)
		token  string
		path   string // default /x.tar
		// reason is the expected failure, "" for success; per mode when
		// pinned and unpinned differ.
		pinned, unpinned failure.Reason
		fragment         string
		// reused: success from the cache without downloading.
		reused bool
	}{
		{name: "other tenant with a valid token: 304", token: "b", reused: true},
		{name: "no credentials: 401", token: "", pinned: failure.Unauthorized, unpinned: failure.Unauthorized, fragment: "401 Unauthorized"},
		{name: "wrong token: 401", token: "z", pinned: failure.Unauthorized, unpinned: failure.Unauthorized, fragment: "401 Unauthorized"},
		{name: "server gone", token: "a", mutate: func(s *authFileServer) { s.srv.Close() },
			pinned: failure.Transient, unpinned: failure.Transient, fragment: "connection refused"},
		{name: "content changed", token: "a", mutate: func(s *authFileServer) {
			s.body, s.etag = testkit.Tar(t, testkit.File("data", "changed")), `"v2"`
		}, pinned: failure.DigestMismatch, fragment: "spec declares"},
		{name: "same URL, conditions ignored, same ETag", token: "b", mutate: func(s *authFileServer) { s.ignoreConditions = true }, reused: true},
	}
	for _, pinned := range []bool{true, false} {
		for _, tt := range tests {
			mode := map[bool]string{true: "pinned", false: "unpinned"}[pinned]
			if !pinned && tt.name == "same URL, conditions ignored, same ETag" {
				continue // unpinned reuse needs a 304: a 200 may be new bytes
			}
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				reg := testkit.NewRegistry(t)
				srv := newAuthFileServer(t, tarBytes, "a", "b")
				engine := proofEngine(t)
				digest := ""
				if pinned {
					digest = testkit.Digest(tarBytes)
				}
				ib, in := urlBuild("a", reg.Host+"/team-a/app:1", srv.srv.URL+"/x.tar", digest, "a")
				if _, err := engine.Build(context.Background(), ib, in, Options{}); err != nil {
					t.Fatal(err)
				}
				if tt.mutate != nil {
					srv.set(tt.mutate)
				}
				reg.Reset()
				before := len(srv.requests())
				ib, in = urlBuild("b", reg.Host+"/team-b/app:1", srv.srv.URL+"/x.tar", digest, tt.token)
				res, err := engine.Build(context.Background(), ib, in, Options{})
				want := map[bool]failure.Reason{true: tt.pinned, false: tt.unpinned}[pinned]
				if want != "" {
					assertFailure(t, err, want, tt.fragment)
					if w := reg.Writes(); w != 0 {
						t.Errorf("failed build wrote %d times to the registry", w)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				after := srv.requests()[before:]
				if tt.reused {
					if res.CacheHits != 1 || res.BytesIn != 0 {
						t.Errorf("cache hits %d, bytes in %d: want the layer reused without download", res.CacheHits, res.BytesIn)
					}
					if len(after) != 1 || after[0].auth != "Bearer "+tt.token || after[0].ifNoneMatch != `"v1"` {
						t.Errorf("requests of the second build = %+v, want one conditional GET with its own token", after)
					}
				}
			})
		}
	}
}

// A pinned digest cached from one URL proves nothing about another: the
// other URL is downloaded in full (and verified), even if it serves the
// same bytes.
func TestPinnedDigestFromAnotherURLIsDownloaded(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	tarBytes := testkit.Tar(t, testkit.File("a", "a"))
	first, second := files.Put("/first.tar", tarBytes), files.Put("/second.tar", tarBytes)
	engine := proofEngine(t)
	for i, u := range []string{first, second, second} {
		ib, in := urlBuild("b", reg.Host+"/team/app:1", u, testkit.Digest(tarBytes), "")
		res, err := engine.Build(context.Background(), ib, in, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if wantHit := i == 2; (res.CacheHits == 1) != wantHit {
			t.Errorf("build %d from %s: cache hits %d, want hit %v", i, u, res.CacheHits, wantHit)
		}
	}
	if got := files.Requests("/second.tar"); got != 2 {
		t.Errorf("second URL requested %d times, want 2 (a download, then a conditional GET)", got)
	}
}

// Two concurrent builds of one unpinned URL, one with an Authorization
// header and one without, never share the fetch: the one without makes its
// own request and fails.
func TestConcurrentFetchesAreSharedOnlyWithTheSameHeaders(t *testing.T) {
	reg := testkit.NewRegistry(t)
	srv := newAuthFileServer(t, testkit.Tar(t, testkit.File("a", "private")), "a")
	anonymous, authorized := make(chan struct{}), make(chan struct{})
	var anonymousOnce, authorizedOnce sync.Once
	srv.set(func(s *authFileServer) {
		s.hold = func(r *http.Request) {
			if r.Header.Get("Authorization") == "" {
				anonymousOnce.Do(func() { close(anonymous) })
				return
			}
			authorizedOnce.Do(func() { close(authorized) })
			// Keep the authorized fetch in flight until the other build
			// has had every chance to join it.
			select {
			case <-anonymous:
			case <-time.After(10 * time.Second):
			}
		}
	})
	engine := proofEngine(t)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, token := range []string{"a", ""} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 1 {
				// Start once the authorized fetch is in flight (a sleep
				// would not order them on a loaded machine).
				select {
				case <-authorized:
				case <-time.After(30 * time.Second):
					errs[i] = errors.New("the authorized fetch never started")
					return
				}
			}
			ib, in := urlBuild("b", reg.Host+"/team/app"+token+":1", srv.srv.URL+"/x.tar", "", token)
			_, errs[i] = engine.Build(context.Background(), ib, in, Options{})
		}()
	}
	wg.Wait()
	if errs[0] != nil {
		t.Errorf("build with the header: %v", errs[0])
	}
	assertFailure(t, errs[1], failure.Unauthorized, "401")
	without := 0
	for _, r := range srv.requests() {
		if r.auth == "" {
			without++
		}
	}
	if without != 1 {
		t.Errorf("server saw %d requests without the header, want exactly 1: %+v", without, srv.requests())
	}
}

func TestFlightKeys(t *testing.T) {
	f := source.NewFetcher(source.Options{})
	blobAs := func(user string) *source.Fetcher {
		return source.NewFetcher(source.Options{Keychain: fixedKeychain{authn.FromConfig(authn.AuthConfig{Username: user, Password: "pw"})}})
	}
	d := testkit.Digest([]byte("x"))
	url := source.Spec{Name: "l", URL: "https://host/x.tar?sig=s3cret"}
	withAuth := url
	withAuth.Headers = map[string]string{"Authorization": "Bearer a"}
	withOther := url
	withOther.Headers = map[string]string{"Authorization": "Bearer b"}
	pinned := url
	pinned.Digest = d
	blob := source.Spec{Name: "l", Blob: "registry.example/team/x@" + d}
	data := source.Spec{Name: "l", Data: []byte("x"), DataRef: "configMap a key b"}
	pinnedData := data
	pinnedData.Digest = d
	key := func(f *source.Fetcher, s source.Spec) string {
		t.Helper()
		k, err := flightKey(context.Background(), f, s, "opts")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(k, "s3cret") || strings.Contains(k, "Bearer") {
			t.Errorf("flight key shows a secret: %s", k)
		}
		return k
	}
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"same URL, no headers", key(f, url), key(f, url), true},
		{"headers vs none", key(f, url), key(f, withAuth), false},
		{"different tokens", key(f, withAuth), key(f, withOther), false},
		{"pinned vs unpinned", key(f, url), key(f, pinned), false},
		{"blob, same credentials", key(blobAs("alice"), blob), key(blobAs("alice"), blob), true},
		{"blob, other credentials", key(blobAs("alice"), blob), key(blobAs("bob"), blob), false},
		{"data vs URL pinned to its digest", key(f, pinnedData), key(f, pinned), false},
	}
	for _, tt := range tests {
		if (tt.a == tt.b) != tt.same {
			t.Errorf("%s: keys equal = %v, want %v", tt.name, tt.a == tt.b, tt.same)
		}
	}
}

type fixedKeychain struct{ a authn.Authenticator }

func (k fixedKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }

// A blob layer pulled by one build is reused by another only after a HEAD
// with the other build's own credentials is answered 200.
func TestBlobLayerReuseNeedsOwnCredentials(t *testing.T) {
	src, target := testkit.NewRegistry(t), testkit.NewRegistry(t)
	basic := func(user string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":pw"))
	}
	deny := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") == basic("alice") {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
	repo, err := name.NewRepository(src.Host + "/team-a/artifacts")
	if err != nil {
		t.Fatal(err)
	}
	content := testkit.Gzip(t, testkit.Tar(t, testkit.File("a", "team-a artifact")))
	l := static.NewLayer(content, types.OCILayer)
	if err := remote.WriteLayer(repo, l); err != nil {
		t.Fatal(err)
	}
	d, _ := l.Digest()
	src.Reset()
	src.SetFault(deny)
	engine := proofEngine(t)
	build := func(user string) (*Result, error) {
		ib := imageBuild("b", target.Host+"/"+user+"/app:1", kilnv1.Layer{Name: "l", Source: &kilnv1.Source{Blob: repo.String() + "@" + d.String()}})
		kc := fixedKeychain{authn.FromConfig(authn.AuthConfig{Username: user, Password: "pw"})}
		return engine.Build(context.Background(), ib, Inputs{Keychain: kc}, Options{})
	}
	if _, err := build("alice"); err != nil {
		t.Fatal(err)
	}
	if got := src.Count("GET blob"); got != 1 {
		t.Fatalf("first build: %d blob GETs, want 1", got)
	}
	src.Reset()
	_, err = build("bob")
	assertFailure(t, err, failure.Unauthorized, "HEAD blob "+repo.String())
	res, err := build("alice")
	if err != nil {
		t.Fatal(err)
	}
	if res.CacheHits != 1 || src.Count("GET blob") != 0 || src.Count("HEAD blob") != 1 {
		t.Errorf("alice again: cache hits %d, %d GETs, %d HEADs; want reuse after one HEAD",
			res.CacheHits, src.Count("GET blob"), src.Count("HEAD blob"))
	}
}
