package registry

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/egress/egresstest"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

// A registry whose every unauthenticated request names realm.
func realmRegistry(t *testing.T, realm string) *testkit.Registry {
	t.Helper()
	h := testkit.NewRegistry(t)
	h.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != "" {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`",service="kiln-test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return true
	})
	return h
}

// Base, target and realm references on forbidden hosts are refused before
// any connection to them, with one permanent SourceForbidden naming the
// host: no retries, nothing pushed.
func TestForbiddenRegistryHostsArePermanent(t *testing.T) {
	res := egresstest.NewResolver(map[string]netip.Addr{
		"rebind.test":  netip.MustParseAddr("169.254.169.254"),
		"rebind6.test": netip.MustParseAddr("fe80::1"),
	})
	resolving := egress.RegistryPolicy(nil).WithResolver(res.Resolver)
	tests := []struct {
		name   string
		realm  string // "" = the target itself is forbidden
		target string
		policy *egress.Policy // nil = default
		inject bool           // inject a dial-counting transport
		want   string
		banned string // no dial may contain it
	}{
		{name: "target metadata IP", target: "169.254.169.254/team/app:1", inject: true,
			want: `target 169.254.169.254/team/app:1: refusing to connect: host "169.254.169.254" resolves to link-local or metadata address 169.254.169.254`, banned: "169.254."},
		{name: "target metadata name", target: "metadata.google.internal/team/app:1", inject: true,
			want: `host "metadata.google.internal" is a cloud metadata endpoint`, banned: "metadata"},
		{name: "target link-local v6", target: "[fe80::1]:5000/team/app:1", inject: true,
			want: `host "fe80::1" resolves to link-local`, banned: "fe80"},
		{name: "target name resolving to link-local", target: "rebind.test/team/app:1", policy: &resolving,
			want: `host "rebind.test" resolves to link-local or metadata address 169.254.169.254`},
		{name: "target name resolving to fe80::1", target: "rebind6.test:5000/team/app:1", policy: &resolving,
			want: `host "rebind6.test" resolves to link-local or metadata address fe80::1`},
		{name: "realm metadata IP", realm: "http://169.254.169.254/token", inject: true,
			want: `token realm http://169.254.169.254/token named by 127.0.0.1:`, banned: "169.254."},
		{name: "realm metadata name", realm: "http://metadata/token", inject: true,
			want: `host "metadata" is a cloud metadata endpoint`, banned: "metadata"},
		{name: "realm resolving to link-local", realm: "http://rebind.test/token", policy: &resolving,
			want: `host "rebind.test" resolves to link-local or metadata address 169.254.169.254`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sleeps{}
			o := testOptions(s)
			o.Policy = tt.policy
			dials := &egresstest.DialLog{}
			if tt.inject {
				o.Transport = &http.Transport{DialContext: dials.Dial}
			}
			target := tt.target
			var reg *testkit.Registry
			if tt.realm != "" {
				reg = realmRegistry(t, tt.realm)
				target = reg.Host + "/team/app:1"
			}
			_, err := Push(context.Background(), randomImage(t), target, []string{"v1"}, o)
			assertFailure(t, err, failure.SourceForbidden, tt.want)
			if !failure.IsPermanent(err) {
				t.Fatalf("not permanent: %v", err)
			}
			if len(s.d) != 0 {
				t.Fatalf("retried a refusal: slept %v", s.d)
			}
			if tt.banned != "" {
				if got := dials.To(tt.banned); len(got) != 0 {
					t.Fatalf("dialled forbidden addresses %v", got)
				}
			}
			if reg != nil && reg.Writes() != 0 {
				t.Fatalf("%d writes", reg.Writes())
			}
			if strings.Contains(err.Error(), "scope=") {
				t.Fatalf("error shows a request query: %v", err)
			}

			// The same refusal for a HEAD check (plan, the controller's
			// "does the target still hold it").
			_, err = Exists(context.Background(), target, digestOf(t, randomImage(t)), o)
			assertFailure(t, err, failure.SourceForbidden, tt.want)
		})
	}
}

// Without the policy's exemption a listed link-local registry would be
// refused; listing it exempts it, and the list does not confine registries
// to the listed hosts.
func TestRegistryPolicyAllowList(t *testing.T) {
	r := newTestRegistry(t)
	s := &sleeps{}
	o := testOptions(s)
	p := egress.RegistryPolicy([]string{"registry.example"})
	o.Policy = &p
	if _, err := Push(context.Background(), randomImage(t), r.Host+"/team/app:1", nil, o); err != nil {
		t.Fatalf("an unlisted, allowed registry was refused: %v", err)
	}
}

// A registry redirecting a blob download to a metadata address: refused at
// the redirect, permanently, without contacting it.
func TestBlobRedirectToForbiddenHost(t *testing.T) {
	r := testkit.NewRegistry(t)
	s := &sleeps{}
	o := testOptions(s)
	img := randomImage(t)
	target := r.Host + "/team/app:1"
	if _, err := Push(context.Background(), img, target, nil, o); err != nil {
		t.Fatal(err)
	}
	r.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/") {
			return false
		}
		http.Redirect(w, req, "http://169.254.169.254/bucket/blob?X-Amz-Signature=s3cr3t", http.StatusTemporaryRedirect)
		return true
	})
	dials := &egresstest.DialLog{}
	o.Transport = &http.Transport{DialContext: dials.Dial}
	ref, err := name.ParseReference(target)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref, RemoteOptions(context.Background(), o)...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = pulled.ConfigFile() // the config blob is redirected
	err = Classify(err, AccessBase, "base "+target)
	assertFailure(t, err, failure.SourceForbidden, `redirect from http://`+r.Host+`/v2/team/app/blobs/sha256:`)
	assertFailure(t, err, failure.SourceForbidden, `host "169.254.169.254" resolves to link-local`)
	if strings.Contains(err.Error(), "s3cr3t") || len(dials.To("169.254.")) != 0 || len(s.d) != 0 {
		t.Fatalf("err %v, dials %v, sleeps %v", err, dials.To("169.254."), s.d)
	}
}

// A registry answering a blob upload with a session Location on a metadata
// address would receive the layer bytes there: refused on arrival of the
// Location, permanently, without contacting it.
func TestUploadLocationToForbiddenHost(t *testing.T) {
	r := testkit.NewRegistry(t)
	r.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/blobs/uploads/") {
			return false
		}
		w.Header().Set("Location", "http://169.254.169.254/upload?X-Amz-Signature=s3cr3t")
		w.WriteHeader(http.StatusAccepted)
		return true
	})
	s := &sleeps{}
	o := testOptions(s)
	dials := &egresstest.DialLog{}
	o.Transport = &http.Transport{DialContext: dials.Dial}
	_, err := Push(context.Background(), randomImage(t), r.Host+"/team/app:1", nil, o)
	assertFailure(t, err, failure.SourceForbidden,
		`location http://169.254.169.254/upload named by http://`+r.Host+`/v2/team/app/blobs/uploads/: host "169.254.169.254" resolves to link-local`)
	if strings.Contains(err.Error(), "s3cr3t") || len(dials.To("169.254.")) != 0 || len(s.d) != 0 || r.Writes() != 0 {
		t.Fatalf("err %v, dials %v, sleeps %v, writes %d", err, dials.To("169.254."), s.d, r.Writes())
	}
}
