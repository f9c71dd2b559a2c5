// Package v1alpha1test holds the ImageBuild fixtures that the API server
// suite (api/v1alpha1, envtest) and the offline validator tests
// (api/v1alpha1/validation, internal/cli) share: one list of valid and
// invalid objects, so that what the API server refuses and what `kiln build
// -f` refuses are checked against the same cases and cannot drift.
package v1alpha1test

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/json"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// Digest is a well-formed sha256 digest.
const Digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// ValidBuild returns an ImageBuild in namespace default that uses every
// source kind and most optional fields.
func ValidBuild(name string) *kilnv1.ImageBuild {
	return &kilnv1.ImageBuild{
		TypeMeta:   metav1.TypeMeta{APIVersion: kilnv1.GroupVersion.String(), Kind: "ImageBuild"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: kilnv1.ImageBuildSpec{
			Base: &kilnv1.Base{Image: "scratch", Platform: "linux/arm64/v8"},
			Layers: []kilnv1.Layer{
				{Name: "rootfs", Source: &kilnv1.Source{URL: "https://example.com/rootfs.tar.xz"}, Digest: Digest, DiffID: Digest, Compression: kilnv1.CompressionXz},
				{Name: "app", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "app", Key: "app.tar.gz"}}, Normalize: kilnv1.NormalizeReproducible},
				{Name: "creds", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "s", Key: "layer.tar"}}},
				{Name: "blob", Source: &kilnv1.Source{Blob: "registry.example/team/artifacts@" + Digest}},
			},
			Config:   &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "PATH", Value: "/app/bin:$PATH"}}},
			Output:   &kilnv1.Output{Compression: kilnv1.OutputZstd},
			Target:   kilnv1.Target{Image: "registry.example/team/app:1.0", Tags: []string{"latest"}},
			Interval: &metav1.Duration{Duration: time.Minute},
		},
	}
}

// MultiPlatformSpec is a valid three-platform spec: an index base, a
// Windows platform with its own base and config, a shared layer, a layer
// with variants and a layer limited to one platform.
func MultiPlatformSpec() kilnv1.ImageBuildSpec {
	return kilnv1.ImageBuildSpec{
		Base: &kilnv1.Base{Image: "registry.example/base:1.2"},
		Platforms: []kilnv1.PlatformBuild{
			{Platform: "linux/amd64"},
			{Platform: "linux/arm64/v8"},
			{Platform: "windows/amd64:10.0.20348",
				Base:   &kilnv1.Base{Image: "registry.example/nanoserver:ltsc2022"},
				Config: &kilnv1.ImageConfig{Entrypoint: []string{`C:\app\app.exe`}}},
		},
		Layers: []kilnv1.Layer{
			{Name: "certs", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "certs", Key: "ca.tar"}}},
			{Name: "app", Variants: []kilnv1.LayerVariant{
				{Platform: "linux/amd64", Source: kilnv1.Source{URL: "https://a.example/app-amd64.tgz"}, Digest: Digest},
				{Platform: "linux/arm64", Source: kilnv1.Source{URL: "https://a.example/app-arm64.tgz"}},
				{Platform: "windows/amd64", Source: kilnv1.Source{URL: "https://a.example/app-win.tgz"}},
			}},
			{Name: "debug", Platforms: []string{"linux/amd64"}, Source: &kilnv1.Source{URL: "https://a.example/busybox.tgz"}},
		},
		Target: kilnv1.Target{Image: "registry.example/team/base:1.0"},
	}
}

// multi returns a Case mutation that starts from MultiPlatformSpec.
func multi(mutate func(s *kilnv1.ImageBuildSpec)) func(*kilnv1.ImageBuild) {
	return func(ib *kilnv1.ImageBuild) {
		ib.Spec = MultiPlatformSpec()
		mutate(&ib.Spec)
	}
}

// ValidBuilds are variants of ValidBuild the API server accepts.
func ValidBuilds() []*kilnv1.ImageBuild {
	win := ValidBuild("valid-windows")
	win.Spec.Base = &kilnv1.Base{Image: "mcr.microsoft.com/windows/nanoserver:ltsc2022", Platform: "windows/amd64:10.0.20348"}
	archive := ValidBuild("valid-archive")
	archive.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: "http://files/base.tar.gz"}, Digest: Digest}}
	noBase := ValidBuild("valid-no-base")
	noBase.Spec.Base = nil
	maxLayers := ValidBuild("valid-127-layers")
	maxLayers.Spec.Layers = numberedLayers(127)
	multiPlatform := ValidBuild("valid-multi-platform")
	multiPlatform.Spec = MultiPlatformSpec()
	files := ValidBuild("valid-files")
	files.Spec.Layers = FilesLayers()
	sourceRefs := ValidBuild("valid-sourceref")
	sourceRefs.Spec.Layers = SourceRefLayers()
	signed := ValidBuild("valid-signed")
	signed.Spec.Signing, signed.Spec.Attestations = SigningSpec()
	return []*kilnv1.ImageBuild{ValidBuild("valid-full"), win, archive, noBase, maxLayers, multiPlatform, files, sourceRefs, signed}
}

// SourceRefLayers use Flux sources: a GitRepository's subdirectory under
// /opt/config, an OCIRepository at the root with a layer override, a Bucket
// and an ExternalArtifact.
func SourceRefLayers() []kilnv1.Layer {
	ref := func(kind kilnv1.SourceKind, name string) *kilnv1.SourceReference {
		return &kilnv1.SourceReference{Kind: kind, Name: name}
	}
	return []kilnv1.Layer{
		{Name: "manifests", Source: &kilnv1.Source{SourceRef: ref(kilnv1.GitRepositoryKind, "platform-config"), Path: "./deploy/base", TargetDir: "/opt/config"}},
		{Name: "bundle", FileMode: "0640", UID: ptr(65532), Source: &kilnv1.Source{SourceRef: ref(kilnv1.OCIRepositoryKind, "bundle")}},
		{Name: "assets", Source: &kilnv1.Source{SourceRef: ref(kilnv1.BucketKind, "assets"), TargetDir: "/srv"}},
		{Name: "generated", Source: &kilnv1.Source{SourceRef: ref(kilnv1.ExternalArtifactKind, "generated"), Path: "out/"}},
	}
}

// sourceRefs returns a Case mutation whose layers are SourceRefLayers, changed.
func sourceRefs(mutate func(ls []kilnv1.Layer)) func(*kilnv1.ImageBuild) {
	return func(ib *kilnv1.ImageBuild) {
		ib.Spec.Layers = SourceRefLayers()
		mutate(ib.Spec.Layers)
	}
}

// SigningSpec signs with the cosign-key Secret and attaches both attestations.
func SigningSpec() (*kilnv1.Signing, *kilnv1.Attestations) {
	return &kilnv1.Signing{Cosign: &kilnv1.CosignSigning{KeyRef: kilnv1.LocalObjectReference{Name: "cosign-key"}}},
		&kilnv1.Attestations{SBOM: &kilnv1.SBOM{}, Provenance: &kilnv1.Provenance{}}
}

// FilesLayers use the generated source kinds and the layer overrides:
// inline, Secret and ConfigMap files, a configMapDir and a secretDir, and
// overrides on a URL layer.
func FilesLayers() []kilnv1.Layer {
	content := strings.Repeat("x", 128<<10) // two of them: 256 KiB, the limit
	return []kilnv1.Layer{
		{Name: "config", FileMode: "0640", UID: ptr(1000), GID: ptr(0), Source: &kilnv1.Source{Files: []kilnv1.FileEntry{
			{Path: "/etc/app/app.yaml", Content: &content, Mode: "644"},
			{Path: "/etc/app/big.txt", Content: &content, UID: ptr(0)},
			{Path: "/etc/app/tls.key", SecretKeyRef: &kilnv1.KeySelector{Name: "tls", Key: "tls.key"}, Mode: "0600"},
			{Path: "/etc/app/log.yaml", ConfigMapKeyRef: &kilnv1.KeySelector{Name: "conf", Key: "log.yaml"}},
		}}},
		{Name: "site", DirMode: "0755", Source: &kilnv1.Source{ConfigMapDir: &kilnv1.DirSource{Name: "site", TargetDir: "/srv/www"}}},
		{Name: "certs", Source: &kilnv1.Source{SecretDir: &kilnv1.DirSource{Name: "certs", TargetDir: "/run/certs"}}},
		{Name: "app", FileMode: "0644", DirMode: "0755", UID: ptr(65532), GID: ptr(65532), Source: &kilnv1.Source{URL: "https://example.com/app.tgz"}},
	}
}

func ptr(v int64) *int64 { return &v }

// files returns a Case mutation whose layers are FilesLayers, changed.
func files(mutate func(ls []kilnv1.Layer)) func(*kilnv1.ImageBuild) {
	return func(ib *kilnv1.ImageBuild) {
		ib.Spec.Layers = FilesLayers()
		mutate(ib.Spec.Layers)
	}
}

// Case is an ImageBuild the API server refuses on create.
type Case struct {
	Name string
	// Mutate turns ValidBuild into the invalid object.
	Mutate func(ib *kilnv1.ImageBuild)
	// MutateObject, when set, then changes the JSON object sent to the
	// server, for what the Go types cannot express (a missing field).
	MutateObject func(obj map[string]any)
	// Want is a fragment of the API server's message.
	Want string
}

// ObjectName is the metadata.name of the case's object.
func (c Case) ObjectName() string {
	return "invalid-" + strings.ToLower(strings.ReplaceAll(c.Name, " ", "-"))
}

// Object returns the case's object as the JSON object a client sends.
func (c Case) Object() (map[string]any, error) {
	ib := ValidBuild(c.ObjectName())
	c.Mutate(ib)
	data, err := json.Marshal(ib)
	if err != nil {
		return nil, fmt.Errorf("encoding case %q: %w", c.Name, err)
	}
	obj := map[string]any{}
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("decoding case %q: %w", c.Name, err)
	}
	if c.MutateObject != nil {
		c.MutateObject(obj)
	}
	return obj, nil
}

// InvalidCases are the objects the API server must refuse, each with a
// fragment of its message.
func InvalidCases() []Case {
	return []Case{
		{Name: "image and archive", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Base.Archive = &kilnv1.Archive{Source: kilnv1.Source{URL: "https://x/a.tar"}}
		}, Want: "spec.base: Invalid value: exactly one of base.image or base.archive must be set"},
		{Name: "neither image nor archive", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Base = &kilnv1.Base{Platform: "linux/amd64"}
		}, Want: "exactly one of base.image or base.archive must be set"},
		{Name: "two sources", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Layers[0].Source.Blob = "r.example/x@" + Digest
		}, Want: "spec.layers[0].source: Invalid value: exactly one of url, configMap, secret, blob, files, configMapDir, secretDir or sourceRef must be set"},
		{Name: "url and files", Mutate: files(func(ls []kilnv1.Layer) {
			ls[3].Source.ConfigMapDir = &kilnv1.DirSource{Name: "x", TargetDir: "/x"}
		}), Want: "spec.layers[3].source: Invalid value: exactly one of url, configMap, secret, blob, files, configMapDir, secretDir or sourceRef must be set"},
		{Name: "file with two contents", Mutate: files(func(ls []kilnv1.Layer) {
			ls[0].Source.Files[2].ConfigMapKeyRef = &kilnv1.KeySelector{Name: "c", Key: "k"}
		}), Want: "spec.layers[0].source.files[2]: Invalid value: exactly one of content, secretKeyRef or configMapKeyRef must be set"},
		{Name: "file without content", Mutate: files(func(ls []kilnv1.Layer) {
			ls[0].Source.Files[3].ConfigMapKeyRef = nil
		}), Want: "spec.layers[0].source.files[3]: Invalid value: exactly one of content, secretKeyRef or configMapKeyRef must be set"},
		{Name: "inline files too big", Mutate: files(func(ls []kilnv1.Layer) {
			one := "y"
			ls[0].Source.Files[3] = kilnv1.FileEntry{Path: "/etc/app/one", Content: &one}
		}), Want: "spec.layers[0].source.files: Invalid value: inline files content must total at most 256 KiB: put bigger files in a ConfigMap"},
		{Name: "relative file path", Mutate: files(func(ls []kilnv1.Layer) {
			ls[0].Source.Files[0].Path = "etc/app.yaml"
		}), Want: `spec.layers[0].source.files[0].path: Invalid value: "etc/app.yaml"`},
		{Name: "bad file mode", Mutate: files(func(ls []kilnv1.Layer) {
			ls[0].Source.Files[0].Mode = "0999"
		}), Want: `spec.layers[0].source.files[0].mode: Invalid value: "0999"`},
		{Name: "bad layer fileMode", Mutate: files(func(ls []kilnv1.Layer) { ls[3].FileMode = "rw-r--r--" }),
			Want: `spec.layers[3].fileMode: Invalid value: "rw-r--r--"`},
		{Name: "bad layer dirMode", Mutate: files(func(ls []kilnv1.Layer) { ls[3].DirMode = "75" }),
			Want: `spec.layers[3].dirMode: Invalid value: "75"`},
		{Name: "negative uid", Mutate: files(func(ls []kilnv1.Layer) { ls[3].UID = ptr(-1) }),
			Want: "spec.layers[3].uid: Invalid value: -1: spec.layers[3].uid in body should be greater than or equal to 0"},
		{Name: "negative file gid", Mutate: files(func(ls []kilnv1.Layer) { ls[0].Source.Files[1].GID = ptr(-5) }),
			Want: "spec.layers[0].source.files[1].gid in body should be greater than or equal to 0"},
		{Name: "relative targetDir", Mutate: files(func(ls []kilnv1.Layer) { ls[1].Source.ConfigMapDir.TargetDir = "srv" }),
			Want: `spec.layers[1].source.configMapDir.targetDir: Invalid value: "srv"`},
		{Name: "sourceRef kind enum", Mutate: sourceRefs(func(ls []kilnv1.Layer) { ls[0].Source.SourceRef.Kind = "HelmRepository" }),
			Want: `spec.layers[0].source.sourceRef.kind: Unsupported value: "HelmRepository"`},
		{Name: "sourceRef without name", Mutate: sourceRefs(func(ls []kilnv1.Layer) { ls[1].Source.SourceRef.Name = "" }),
			Want: "spec.layers[1].source.sourceRef.name: Invalid value"},
		{Name: "url and sourceRef", Mutate: sourceRefs(func(ls []kilnv1.Layer) { ls[1].Source.URL = "https://example.com/x.tgz" }),
			Want: "spec.layers[1].source: Invalid value: exactly one of url, configMap, secret, blob, files, configMapDir, secretDir or sourceRef must be set"},
		{Name: "path without sourceRef", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Source.Path = "deploy" },
			Want: "spec.layers[0].source: Invalid value: path and targetDir are fields of a sourceRef source"},
		{Name: "targetDir without sourceRef", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Source.TargetDir = "/opt" },
			Want: "spec.layers[0].source: Invalid value: path and targetDir are fields of a sourceRef source"},
		{Name: "sourceRef path escapes", Mutate: sourceRefs(func(ls []kilnv1.Layer) { ls[0].Source.Path = "deploy/../../etc" }),
			Want: `spec.layers[0].source.path: Invalid value: "deploy/../../etc": path must not contain ".."`},
		{Name: "sourceRef relative targetDir", Mutate: sourceRefs(func(ls []kilnv1.Layer) { ls[2].Source.TargetDir = "srv" }),
			Want: `spec.layers[2].source.targetDir: Invalid value: "srv"`},
		{Name: "sourceRef base archive", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{SourceRef: &kilnv1.SourceReference{Kind: kilnv1.GitRepositoryKind, Name: "g"}}}}
		}, Want: "spec.base.archive: Invalid value: a base archive's source is one of url, configMap, secret or blob"},
		{Name: "files base archive", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{SecretDir: &kilnv1.DirSource{Name: "s", TargetDir: "/x"}}}}
		}, Want: "spec.base.archive: Invalid value: a base archive's source is one of url, configMap, secret or blob"},
		{Name: "attestations without signing", Mutate: func(ib *kilnv1.ImageBuild) {
			_, ib.Spec.Attestations = SigningSpec()
		}, Want: "spec: Invalid value: spec.attestations are signed with spec.signing's key: set spec.signing"},
		{Name: "signature format enum", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Signing, _ = SigningSpec()
			ib.Spec.Signing.Cosign.Format = "x509"
		}, Want: `spec.signing.cosign.format: Unsupported value: "x509"`},
		{Name: "sbom format enum", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Signing, ib.Spec.Attestations = SigningSpec()
			ib.Spec.Attestations.SBOM.Format = "cyclonedx"
		}, Want: `spec.attestations.sbom.format: Unsupported value: "cyclonedx"`},
		{Name: "signing without cosign", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Signing = &kilnv1.Signing{}
		}, Want: "spec.signing.cosign: Required value"},
		{Name: "no source", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Layers[0].Source = &kilnv1.Source{}
		}, Want: "exactly one of url, configMap, secret, blob, files, configMapDir, secretDir or sourceRef must be set"},
		{Name: "bad digest", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Digest = "sha256:abc" },
			Want: `spec.layers[0].digest: Invalid value: "sha256:abc"`},
		{Name: "uppercase diffID", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].DiffID = strings.ToUpper(Digest) },
			Want: "spec.layers[0].diffID: Invalid value"},
		{Name: "bad archive digest", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: "https://x/a.tar"}, Digest: "md5:00"}}
		}, Want: "spec.base.archive.digest: Invalid value"},
		{Name: "compression enum", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Compression = "lz4" },
			Want: `spec.layers[0].compression: Unsupported value: "lz4"`},
		{Name: "output compression enum", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Output.Compression = "xz" },
			Want: `spec.output.compression: Unsupported value: "xz"`},
		{Name: "normalize enum", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[1].Normalize = "strict" },
			Want: `spec.layers[1].normalize: Unsupported value: "strict"`},
		{Name: "target image empty", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Target.Image = "" },
			Want: "spec.target.image"},
		{Name: "interval below 1m", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Interval = &metav1.Duration{Duration: 30 * time.Second} },
			Want: `spec.interval: Invalid value: "30s": interval must be at least 1m`},
		{Name: "duplicate layer names", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[1].Name = "rootfs" },
			Want: `spec: Invalid value: layer names must be unique`},
		{Name: "layer name not a DNS label", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Name = "Root_FS" },
			Want: `spec.layers[0].name: Invalid value: "Root_FS"`},
		{Name: "platform shape", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Base.Platform = "linux" },
			Want: `spec.base.platform: Invalid value: "linux"`},
		{Name: "url scheme", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Source.URL = "ftp://x/y.tar" },
			Want: "spec.layers[0].source.url: Invalid value"},
		{Name: "blob without digest", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[3].Source.Blob = "r.example/x:latest" },
			Want: "spec.layers[3].source.blob: Invalid value"},
		{Name: "configMap without key", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[1].Source.ConfigMap.Key = "" },
			Want: "spec.layers[1].source.configMap.key"},
		{Name: "base update policy enum", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Base.UpdatePolicy = "Ignore" },
			Want: `spec.base.updatePolicy: Unsupported value: "Ignore"`},
		{Name: "128 layers", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers = numberedLayers(128) },
			Want: "spec.layers: Too many: 128: must have at most 127 items"},
		{Name: "layer name too long", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Name = strings.Repeat("a", 64) },
			Want: "spec.layers[0].name: Too long: may not be more than 63 bytes"},
		{Name: "caBundle from both", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Target.CABundle = &kilnv1.CABundleSource{
				ConfigMap: &kilnv1.KeySelector{Name: "ca", Key: "ca.crt"},
				Secret:    &kilnv1.KeySelector{Name: "ca", Key: "ca.crt"},
			}
		}, Want: "spec.target.caBundle: Invalid value: exactly one of configMap or secret must be set"},
		{Name: "env name with equals sign", Mutate: func(ib *kilnv1.ImageBuild) { ib.Spec.Config.Env[0].Name = "A=B" },
			Want: `spec.config.env[0].name: Invalid value: "A=B"`},
		{Name: "missing target", Mutate: func(*kilnv1.ImageBuild) {}, MutateObject: func(obj map[string]any) {
			delete(obj["spec"].(map[string]any), "target")
		}, Want: "spec.target: Required value"},
		{Name: "base.platform with platforms", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Base.Platform = "linux/amd64" }),
			Want: "spec: Invalid value: spec.base.platform and spec.platforms are mutually exclusive"},
		{Name: "duplicate platforms", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Platforms[1].Platform = "linux/amd64" }),
			Want: "spec.platforms[1]: Duplicate value"},
		{Name: "variants without platforms", Mutate: func(ib *kilnv1.ImageBuild) {
			ib.Spec.Layers[0] = kilnv1.Layer{Name: "rootfs", Variants: []kilnv1.LayerVariant{{Platform: "linux/amd64", Source: kilnv1.Source{URL: "https://x/a.tar"}}}}
		}, Want: "spec: Invalid value: layers[].variants and layers[].platforms need spec.platforms"},
		{Name: "source and variants", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Layers[1].Source = &kilnv1.Source{URL: "https://x/a.tar"} }),
			Want: "spec.layers[1]: Invalid value: exactly one of source or variants must be set"},
		{Name: "neither source nor variants", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Layers[0].Source = nil }),
			Want: "spec.layers[0]: Invalid value: exactly one of source or variants must be set"},
		{Name: "variant for an unlisted platform", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Layers[1].Variants[1].Platform = "linux/s390x" }),
			Want: "spec: Invalid value: every layers[].variants[].platform must be one of spec.platforms, or a prefix of one"},
		{Name: "variant missing for a platform", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Layers[1].Variants = s.Layers[1].Variants[:2] }),
			Want: "spec: Invalid value: a layer with variants must have a variant for every platform it applies to"},
		{Name: "layer platforms entry unlisted", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Layers[2].Platforms = []string{"linux/riscv64"} }),
			Want: "spec: Invalid value: every layers[].platforms entry must be one of spec.platforms, or a prefix of one"},
		{Name: "duplicate variant platforms", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Layers[1].Variants[1].Platform = "linux/amd64" }),
			Want: "spec.layers[1]: Invalid value: variant platforms must be unique"},
		{Name: "layer digest with variants", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Layers[1].Digest = Digest }),
			Want: "spec.layers[1]: Invalid value: with variants, digest, diffID and compression are set per variant"},
		{Name: "platform base override with platform", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Platforms[2].Base.Platform = "windows/amd64" }),
			Want: "spec.platforms[2]: Invalid value: platforms[].base takes image or archive only"},
		{Name: "platform shape in platforms", Mutate: multi(func(s *kilnv1.ImageBuildSpec) { s.Platforms[0].Platform = "amd64" }),
			Want: `spec.platforms[0].platform: Invalid value: "amd64"`},
		{Name: "object name not a DNS subdomain", Mutate: func(ib *kilnv1.ImageBuild) { ib.Name = "Invalid_Name" },
			Want: `metadata.name: Invalid value: "Invalid_Name": a lowercase RFC 1123 subdomain`},
	}
}

// numberedLayers returns n valid layers named l0, l1, ...
func numberedLayers(n int) []kilnv1.Layer {
	layers := make([]kilnv1.Layer, n)
	for i := range layers {
		layers[i] = kilnv1.Layer{Name: fmt.Sprintf("l%d", i), Source: &kilnv1.Source{URL: fmt.Sprintf("https://example.com/%d.tar", i)}}
	}
	return layers
}

// SampleFiles lists the ImageBuild samples under dir (config/samples): the
// kiln_v1alpha1_*.yaml files there and in its flux/ directory (the samples
// that need Flux's source-controller, kept out of the demo's and the
// kustomization's set).
func SampleFiles(dir string) ([]string, error) {
	var out []string
	for _, pattern := range []string{"kiln_v1alpha1_*.yaml", filepath.Join("flux", "kiln_v1alpha1_*.yaml")} {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	return out, nil
}
