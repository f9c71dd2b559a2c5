package sandbox

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/signing"
)

func testRewriter() Rewriter {
	return Rewriter{
		Registry: "127.0.0.1:5000",
		FileURL:  func(name string) string { return "http://127.0.0.1:8080/" + name },
	}
}

func loadRepoSamples(t *testing.T) map[string]*kilnv1.ImageBuild {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ibs, err := LoadSamples(filepath.Join(root, "config", "samples"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*kilnv1.ImageBuild{}
	for _, ib := range ibs {
		out[ib.Name] = ib
	}
	return out
}

func TestRewriteRepoSamples(t *testing.T) {
	samples := loadRepoSamples(t)
	for _, n := range []string{"scratch-app", "registry-base-app", "windows-app"} {
		if samples[n] == nil {
			t.Fatalf("sample %s not found in config/samples (have %d)", n, len(samples))
		}
	}
	for _, ib := range samples {
		if err := testRewriter().Rewrite(ib); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	s := samples["scratch-app"]
	check("scratch base", s.Spec.Base.Image, "scratch")
	check("scratch rootfs url", s.Spec.Layers[0].Source.URL, "http://127.0.0.1:8080/rootfs.tar.xz")
	check("scratch app url", s.Spec.Layers[1].Source.URL, "http://127.0.0.1:8080/app.tar.gz")
	check("scratch target", s.Spec.Target.Image, "127.0.0.1:5000/team/app:1.0")
	check("scratch tags", strings.Join(s.Spec.Target.Tags, ","), "latest")
	check("scratch env kept", s.Spec.Config.Env[1].Value, "production")

	r := samples["registry-base-app"]
	check("registry base", r.Spec.Base.Image, "127.0.0.1:5000/library/debian:12-slim")
	check("registry configMap kept", r.Spec.Layers[0].Source.ConfigMap.Name, "app-files")
	check("registry target", r.Spec.Target.Image, "127.0.0.1:5000/team/app-on-debian:1.0")

	w := samples["windows-app"]
	check("windows base", w.Spec.Base.Image, "127.0.0.1:5000/windows/nanoserver:ltsc2022")
	check("windows platform kept", w.Spec.Base.Platform, "windows/amd64:10.0.20348")
	check("windows url", w.Spec.Layers[0].Source.URL, "http://127.0.0.1:8080/windows-app.tar.gz")
	check("windows target", w.Spec.Target.Image, "127.0.0.1:5000/team/windows-app:1.0")
}

func TestRewriteCases(t *testing.T) {
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := []struct {
		name    string
		spec    kilnv1.ImageBuildSpec
		wantErr string
		check   func(t *testing.T, s *kilnv1.ImageBuildSpec)
	}{
		{
			name: "digest base and blob source keep their digests",
			spec: kilnv1.ImageBuildSpec{
				Base:   &kilnv1.Base{Image: "mcr.microsoft.com/windows/nanoserver@" + dgst},
				Layers: []kilnv1.Layer{{Name: "a", Source: &kilnv1.Source{Blob: "registry.example/team/artifacts@" + dgst}}},
				Target: kilnv1.Target{Image: "registry.example/t/x@" + dgst},
			},
			check: func(t *testing.T, s *kilnv1.ImageBuildSpec) {
				if s.Base.Image != "127.0.0.1:5000/windows/nanoserver@"+dgst {
					t.Errorf("base %q", s.Base.Image)
				}
				if s.Layers[0].Source.Blob != "127.0.0.1:5000/team/artifacts@"+dgst {
					t.Errorf("blob %q", s.Layers[0].Source.Blob)
				}
			},
		},
		{
			name: "docker hub short name keeps library/ and other URLs stay",
			spec: kilnv1.ImageBuildSpec{
				Base: &kilnv1.Base{Image: "debian:12", Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: "https://ARTIFACTS.example/dir/base.tar.gz?x=1"}}},
				Layers: []kilnv1.Layer{
					{Name: "a", Source: &kilnv1.Source{URL: "https://elsewhere.example/a.tar"}},
				},
				Target: kilnv1.Target{Image: "team/app"},
			},
			check: func(t *testing.T, s *kilnv1.ImageBuildSpec) {
				if s.Base.Image != "127.0.0.1:5000/library/debian:12" {
					t.Errorf("base %q", s.Base.Image)
				}
				if got := s.Base.Archive.Source.URL; got != "http://127.0.0.1:8080/dir/base.tar.gz" {
					t.Errorf("archive url %q", got)
				}
				if got := s.Layers[0].Source.URL; got != "https://elsewhere.example/a.tar" {
					t.Errorf("other url changed: %q", got)
				}
				if s.Target.Image != "127.0.0.1:5000/team/app:latest" {
					t.Errorf("target %q", s.Target.Image)
				}
			},
		},
		{
			name: "bad references are named with their field",
			spec: kilnv1.ImageBuildSpec{
				Base:   &kilnv1.Base{Image: "Bad Ref"},
				Target: kilnv1.Target{Image: "also::bad"},
			},
			wantErr: `x: spec.base.image: parsing image reference "Bad Ref"`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ib := &kilnv1.ImageBuild{Spec: c.spec}
			ib.Name = "x"
			err := testRewriter().Rewrite(ib)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, c.wantErr)
				}
				if !strings.Contains(err.Error(), "x: spec.target.image:") {
					t.Errorf("error %v should also name spec.target.image", err)
				}
				if ib.Spec.Base.Image != "Bad Ref" {
					t.Errorf("failed rewrite changed the field to %q", ib.Spec.Base.Image)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, &ib.Spec)
		})
	}
}

func TestDecodeImageBuildsSkipsOtherKindsAndRejectsUnknownFields(t *testing.T) {
	ibs, err := DecodeImageBuilds([]byte(`apiVersion: v1
kind: ConfigMap
metadata: {name: c}
---
apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: a}
spec: {target: {image: r.example/a}}
`))
	if err != nil || len(ibs) != 1 || ibs[0].Name != "a" {
		t.Fatalf("got %v, %v", ibs, err)
	}
	_, err = DecodeImageBuilds([]byte("kind: ImageBuild\nspec: {targit: {}}\n"))
	if err == nil || !strings.Contains(err.Error(), `document 0: error unmarshaling JSON`) || !strings.Contains(err.Error(), "targit") {
		t.Fatalf("unknown field: got %v", err)
	}
}

func TestConfigMapsFor(t *testing.T) {
	samples := loadRepoSamples(t)
	var ibs []*kilnv1.ImageBuild
	for _, ib := range samples {
		ibs = append(ibs, ib)
	}
	cms, err := ConfigMapsFor(ibs, "default", map[string][]byte{AppFile: []byte("tgz")})
	if err != nil {
		t.Fatal(err)
	}
	if len(cms) != 1 || cms[0].Name != "app-files" || cms[0].Namespace != "default" || string(cms[0].BinaryData[AppFile]) != "tgz" {
		t.Fatalf("got %+v", cms)
	}
	_, err = ConfigMapsFor(ibs, "default", nil)
	if err == nil || !strings.Contains(err.Error(), `registry-base-app: ConfigMap app-files key "app.tar.gz": no generated input of that name`) {
		t.Fatalf("missing key: got %v", err)
	}
}

func TestSigningSecretsFor(t *testing.T) {
	ibs := []*kilnv1.ImageBuild{{}, {}}
	ibs[0].Spec.Signing = &kilnv1.Signing{Cosign: &kilnv1.CosignSigning{KeyRef: kilnv1.LocalObjectReference{Name: "k"}}}
	secrets, pub, err := SigningSecretsFor(ibs, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) != 1 || secrets[0].Name != "k" || secrets[0].Namespace != "default" || !bytes.Contains(pub, []byte("PUBLIC KEY")) {
		t.Fatalf("secrets %v, pub %q", secrets, pub)
	}
	key, err := signing.ParseKey(secrets[0].Data[kilnv1.CosignKeyKey], secrets[0].Data[kilnv1.CosignPasswordKey])
	if err != nil {
		t.Fatal(err)
	}
	if string(key.PublicKeyPEM()) != string(pub) {
		t.Errorf("cosign.pub is not the key's public key")
	}
	if s, _, _ := SigningSecretsFor(ibs[1:], "default"); s != nil {
		t.Errorf("a build that does not sign got Secrets %v", s)
	}
}
