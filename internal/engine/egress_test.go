package engine

import (
	"context"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/egress/egresstest"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

// Base, target, blob and token realm references on link-local or metadata
// hosts fail the build at once with a permanent SourceForbidden naming the
// host, in a build and in a plan, without contacting the host or pushing.
func TestForbiddenHostsFailTheBuildPermanently(t *testing.T) {
	files := testkit.NewFileServer(t)
	layerURL := files.Put("/l.tar", testkit.Tar(t, testkit.File("a", "a")))
	res := egresstest.NewResolver(map[string]netip.Addr{"rebind.test": netip.MustParseAddr("169.254.169.254")})
	resolving := egress.RegistryPolicy(nil).WithResolver(res.Resolver)
	digest := testkit.Digest([]byte("x"))
	tests := []struct {
		name    string
		base    string
		target  string // "" = the test registry
		layer   kilnv1.Layer
		realm   string // the test registry names it as token realm
		policy  *egress.Policy
		want    string
		noDials string
	}{
		{name: "base metadata IP", base: "169.254.169.254/library/base:1",
			want: `base 169.254.169.254/library/base:1: refusing to connect: host "169.254.169.254" resolves to link-local`, noDials: "169.254."},
		{name: "base metadata name", base: "metadata.google.internal/library/base:1",
			want: `host "metadata.google.internal" is a cloud metadata endpoint`, noDials: "metadata"},
		{name: "base name resolving to link-local", base: "rebind.test/library/base:1", policy: &resolving,
			want: `host "rebind.test" resolves to link-local or metadata address 169.254.169.254`},
		{name: "target metadata IP", target: "169.254.169.254/team/app:1",
			want: `target 169.254.169.254/team/app:1: refusing to connect: host "169.254.169.254"`, noDials: "169.254."},
		{name: "target link-local v6", target: "[fe80::1]:5000/team/app:1",
			want: `host "fe80::1" resolves to link-local`, noDials: "fe80"},
		{name: "blob metadata name", layer: kilnv1.Layer{Name: "l", Source: &kilnv1.Source{Blob: "metadata.google.internal/team/x@" + digest}},
			want: `layer "l": refusing blob metadata.google.internal/team/x@` + digest + `: host "metadata.google.internal" is a cloud metadata endpoint`, noDials: "metadata"},
		{name: "target realm metadata IP", realm: "http://169.254.169.254/token",
			want: `token realm http://169.254.169.254/token named by 127.0.0.1:`, noDials: "169.254."},
	}
	for _, tt := range tests {
		for _, plan := range []bool{false, true} {
			name := tt.name
			if plan {
				name += "/plan"
			}
			t.Run(name, func(t *testing.T) {
				reg := testkit.NewRegistry(t)
				if tt.realm != "" {
					fault := func(w http.ResponseWriter, r *http.Request) bool {
						w.Header().Set("WWW-Authenticate", `Bearer realm="`+tt.realm+`"`)
						w.WriteHeader(http.StatusUnauthorized)
						return true
					}
					reg.SetFault(fault)
				}
				target := tt.target
				if target == "" {
					target = reg.Host + "/team/app:1"
				}
				layer := tt.layer
				if layer.Name == "" {
					layer = urlLayer("l", layerURL)
				}
				ib := imageBuild("app", target, layer)
				if tt.base != "" {
					ib.Spec.Base.Image = tt.base
				}
				e := newEngine(t, "")
				dials := &egresstest.DialLog{}
				if tt.policy != nil {
					e.Registry.Policy = tt.policy
				} else {
					e.Registry.Transport = &http.Transport{DialContext: dials.Dial}
				}
				_, err := e.Build(context.Background(), ib, Inputs{}, Options{DryRun: plan})
				if !failure.IsPermanent(err) || failure.ReasonOf(err) != failure.SourceForbidden || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v (%s, permanent %v), want permanent SourceForbidden containing %q",
						err, failure.ReasonOf(err), failure.IsPermanent(err), tt.want)
				}
				if tt.noDials != "" && len(dials.To(tt.noDials)) != 0 {
					t.Fatalf("dialled %v", dials.To(tt.noDials))
				}
				if w := reg.Writes(); w != 0 {
					t.Fatalf("%d registry writes", w)
				}
			})
		}
	}
}

// One flag, two rules: the hosts that confine URL sources do not confine the
// registries a build names.
func TestAllowedHostsConfineURLSourcesOnly(t *testing.T) {
	files, reg := testkit.NewFileServer(t), testkit.NewRegistry(t)
	layerURL := files.Put("/l.tar", testkit.Tar(t, testkit.File("a", "a")))
	e := newEngine(t, "")
	e.Source.AllowedHosts = []string{strings.TrimPrefix(files.URL, "http://")}
	ib := imageBuild("app", reg.Host+"/team/app:1", urlLayer("l", layerURL))
	if _, err := e.Build(context.Background(), ib, Inputs{}, Options{}); err != nil {
		t.Fatalf("a registry outside the URL allow-list was refused: %v", err)
	}
	other := testkit.NewFileServer(t)
	ib = imageBuild("app", reg.Host+"/team/app:2", urlLayer("l", other.Put("/l.tar", testkit.Tar(t, testkit.File("b", "b")))))
	_, err := e.Build(context.Background(), ib, Inputs{}, Options{})
	if failure.ReasonOf(err) != failure.SourceForbidden || !strings.Contains(err.Error(), "is not in the allowed hosts") {
		t.Fatalf("a URL source outside the allow-list: %v", err)
	}
}

// target.caBundle covers blob registries: a blob layer on a registry whose
// certificate only the bundle trusts is fetched with it and fails (x509,
// permanent) without it.
func TestCABundleCoversBlobSources(t *testing.T) {
	tlsReg := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	tlsReg.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	tlsReg.StartTLS()
	t.Cleanup(tlsReg.Close)
	_, port, _ := net.SplitHostPort(tlsReg.Listener.Addr().String())
	// httptest's certificate names example.com; the fake resolver points it
	// at the server, so the registry is an https one with a real name.
	res := egresstest.NewResolver(map[string]netip.Addr{"example.com": netip.MustParseAddr("127.0.0.1")})
	policy := egress.RegistryPolicy(nil).WithResolver(res.Resolver)
	content := testkit.Tar(t, testkit.File("etc/blob", "from a TLS registry"))
	blob := pushBlob(t, tlsReg, "127.0.0.1:"+port+"/team/blobs", content)
	blob = "example.com:" + port + strings.TrimPrefix(blob, "127.0.0.1:"+port)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsReg.Certificate().Raw})

	reg := testkit.NewRegistry(t)
	build := func(withCA bool) error {
		e := newEngine(t, "")
		e.Registry.Policy = &policy
		ib := imageBuild("app", reg.Host+"/team/app:1", kilnv1.Layer{Name: "blob", Source: &kilnv1.Source{Blob: blob}})
		in := Inputs{}
		if withCA {
			ib.Spec.Target.CABundle = &kilnv1.CABundleSource{ConfigMap: &kilnv1.KeySelector{Name: "ca", Key: "ca.crt"}}
			in.ConfigMaps = map[string]map[string][]byte{"ca": {"ca.crt": caPEM}}
		}
		_, err := e.Build(context.Background(), ib, in, Options{})
		return err
	}
	if err := build(true); err != nil {
		t.Fatalf("with the CA bundle: %v", err)
	}
	if got := layerTar(t, pull(t, reg.Host+"/team/app:1"), 0); string(got) != string(content) {
		t.Fatal("the pushed layer is not the blob")
	}
	err := build(false)
	if !failure.IsPermanent(err) || failure.ReasonOf(err) != failure.InvalidSpec ||
		!strings.Contains(err.Error(), "x509: certificate signed by unknown authority") || !strings.Contains(err.Error(), `layer "blob"`) {
		t.Fatalf("without the CA bundle: %v", err)
	}
}

// pushBlob uploads content as a blob of repo on srv and returns repo@digest.
func pushBlob(t *testing.T, srv *httptest.Server, repo string, content []byte) string {
	t.Helper()
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	l := static.NewLayer(content, types.OCIUncompressedLayer)
	if err := remote.WriteLayer(r, l, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatalf("pushing the blob: %v", err)
	}
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return repo + "@" + d.String()
}
