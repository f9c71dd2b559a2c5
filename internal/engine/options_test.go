package engine

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
)

func TestRegistryOptionsFromSpecAndInputs(t *testing.T) {
	pem := []byte("-----BEGIN CERTIFICATE-----\n...")
	in := Inputs{
		ConfigMaps: map[string]map[string][]byte{"ca": {"ca.crt": pem}},
		Secrets:    map[string]map[string][]byte{"tls": {"bundle": pem}},
		Keychain:   authn.NewMultiKeychain(),
	}
	tests := []struct {
		name     string
		target   kilnv1.Target
		wantCA   bool
		insecure bool
		err      string
	}{
		{"plain", kilnv1.Target{Image: "r.example/a"}, false, false, ""},
		{"insecure", kilnv1.Target{Image: "r.example/a", Insecure: true}, false, true, ""},
		{"ca from configMap", kilnv1.Target{Image: "r.example/a", CABundle: &kilnv1.CABundleSource{ConfigMap: &kilnv1.KeySelector{Name: "ca", Key: "ca.crt"}}}, true, false, ""},
		{"ca from secret", kilnv1.Target{Image: "r.example/a", CABundle: &kilnv1.CABundleSource{Secret: &kilnv1.KeySelector{Name: "tls", Key: "bundle"}}}, true, false, ""},
		{"ca key missing", kilnv1.Target{Image: "r.example/a", CABundle: &kilnv1.CABundleSource{Secret: &kilnv1.KeySelector{Name: "tls", Key: "nope"}}}, false, false, `target.caBundle: Secret "tls" has no key "nope"`},
		{"ca object missing", kilnv1.Target{Image: "r.example/a", CABundle: &kilnv1.CABundleSource{ConfigMap: &kilnv1.KeySelector{Name: "gone", Key: "ca.crt"}}}, false, false, `target.caBundle: ConfigMap "gone" not found in the ImageBuild's namespace`},
	}
	e := &Engine{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := e.registryOptions(&kilnv1.ImageBuildSpec{Target: tt.target}, in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err || failure.ReasonOf(err) != failure.SourceNotFound {
					t.Fatalf("error = %v, want SourceNotFound %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (len(o.CABundle) > 0) != tt.wantCA || o.Insecure != tt.insecure || o.Keychain != in.Keychain {
				t.Errorf("options = CA %d bytes, insecure %v, keychain %v", len(o.CABundle), o.Insecure, o.Keychain)
			}
		})
	}
}
