package image

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/testkit"
	"github.com/kiln-build/kiln/internal/version"
)

func TestScratchPlusLayerPlusEnvIsOneManifestPut(t *testing.T) {
	reg := testkit.NewRegistry(t)
	add := addition(t, "app", "app/bin/server", "#!/bin/true\n")
	a := mustAssemble(t, Spec{
		Base:      Scratch(v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}),
		Additions: []Addition{add},
		Config:    Config{Env: []EnvVar{{Name: "PATH", Value: "/app/bin:$PATH"}, {Name: "MODE", Value: "prod"}}},
	})
	res, err := registry.Push(context.Background(), a.Image, reg.Host+"/team/app:1", nil, regOptions())
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != a.Digest {
		t.Fatalf("pushed %s, assembled %s", res.Digest, a.Digest)
	}
	if n := reg.Count("PUT manifest"); n != 1 {
		t.Fatalf("%d manifest PUTs, want 1", n)
	}

	ref, _ := name.ParseReference(reg.Host + "/team/app:1")
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	cf := mustConfig(t, img)
	if got := strings.Join(cf.Config.Env, ";"); got != "PATH=/app/bin:;MODE=prod" {
		t.Errorf("env = %q", got)
	}
	if len(cf.RootFS.DiffIDs) != 1 || cf.RootFS.DiffIDs[0] != add.DiffID {
		t.Errorf("diff_ids = %v, want [%s]", cf.RootFS.DiffIDs, add.DiffID)
	}
	if len(cf.History) != 1 || cf.History[0].CreatedBy != "kiln: layer app from url" ||
		!cf.History[0].Created.Time.Equal(version.Epoch) {
		t.Errorf("history = %+v", cf.History)
	}
	if cf.OS != "linux" || cf.Architecture != "arm64" || cf.Variant != "v8" || !cf.Created.Time.Equal(version.Epoch) {
		t.Errorf("config platform/created = %s/%s/%s %v", cf.OS, cf.Architecture, cf.Variant, cf.Created)
	}
	m := mustManifest(t, img)
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("media types %s %s %s", m.MediaType, m.Config.MediaType, m.Layers[0].MediaType)
	}
	if len(m.Annotations) != 0 {
		t.Errorf("scratch image got annotations %v", m.Annotations)
	}
}

func TestAssembleIsReproducible(t *testing.T) {
	add := addition(t, "app", "a", "1")
	s := Spec{Base: Scratch(DefaultPlatform), Additions: []Addition{add, add},
		Config:  Config{Labels: map[string]string{"b": "2", "a": "1", "c": "3"}, ExposedPorts: []string{"80", "53/udp"}},
		Created: time.Date(2024, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))}
	a1, a2 := mustAssemble(t, s), mustAssemble(t, s)
	if a1.Digest != a2.Digest || a1.ConfigDigest != a2.ConfigDigest {
		t.Fatal("same spec, different digests")
	}
	cf := mustConfig(t, a1.Image)
	if cf.Created.Time.Format(time.RFC3339) != "2024-01-02T02:04:05Z" {
		t.Errorf("created = %v, want UTC of spec.created", cf.Created.Time)
	}
	if _, ok := cf.Config.ExposedPorts["80/tcp"]; !ok {
		t.Errorf("ports = %v", cf.Config.ExposedPorts)
	}
}

// configBase is an OCI base with a config the merge tests start from.
func configBase(t *testing.T, c v1.Config) *Base {
	t.Helper()
	img, err := mutate.Config(mutate.MediaType(empty.Image, types.OCIManifestSchema1), c)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf := mustConfig(t, img)
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return &Base{Image: img, Name: "registry.test/base:1", Digest: d, RefDigest: d, Platform: DefaultPlatform}
}

func TestAssembleConfigMerge(t *testing.T) {
	baseCfg := v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"},
		Labels: map[string]string{"team": "base", "keep": "yes"}, WorkingDir: "/", User: "root",
		ExposedPorts: map[string]struct{}{"22/tcp": {}},
	}
	tests := []struct {
		name  string
		c     Config
		check func(t *testing.T, c v1.Config)
	}{
		{"entrypoint without cmd clears cmd", Config{Entrypoint: []string{"/app"}, EntrypointSet: true}, func(t *testing.T, c v1.Config) {
			if fmt.Sprint(c.Entrypoint) != "[/app]" || c.Cmd != nil {
				t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
			}
		}},
		{"entrypoint with cmd", Config{Entrypoint: []string{"/app"}, EntrypointSet: true, Cmd: []string{"-v"}, CmdSet: true}, func(t *testing.T, c v1.Config) {
			if fmt.Sprint(c.Entrypoint, c.Cmd) != "[/app] [-v]" {
				t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
			}
		}},
		{"cmd only keeps entrypoint", Config{Cmd: []string{"date"}, CmdSet: true}, func(t *testing.T, c v1.Config) {
			if fmt.Sprint(c.Entrypoint, c.Cmd) != "[/bin/sh -c] [date]" {
				t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
			}
		}},
		{"empty entrypoint set clears it", Config{EntrypointSet: true}, func(t *testing.T, c v1.Config) {
			if c.Entrypoint != nil || c.Cmd != nil {
				t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
			}
		}},
		{"labels merged", Config{Labels: map[string]string{"team": "a", "new": "1"}}, func(t *testing.T, c v1.Config) {
			if fmt.Sprint(c.Labels) != "map[keep:yes new:1 team:a]" {
				t.Errorf("labels %v", c.Labels)
			}
		}},
		{"workdir user stopsignal ports volumes", Config{WorkingDir: "/app", User: "65532:65532", StopSignal: "SIGTERM",
			ExposedPorts: []string{"8080/tcp", "9090"}, Volumes: []string{"/data"}}, func(t *testing.T, c v1.Config) {
			if c.WorkingDir != "/app" || c.User != "65532:65532" || c.StopSignal != "SIGTERM" {
				t.Errorf("config %+v", c)
			}
			if len(c.ExposedPorts) != 3 || len(c.Volumes) != 1 {
				t.Errorf("ports %v volumes %v", c.ExposedPorts, c.Volumes)
			}
		}},
		{"nothing set keeps base", Config{}, func(t *testing.T, c v1.Config) {
			if fmt.Sprintln(c.Entrypoint, c.Cmd, c.WorkingDir, c.User) != "[/bin/sh -c] [echo hi] / root\n" {
				t.Errorf("config %+v", c)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := mustAssemble(t, Spec{Base: configBase(t, baseCfg), Config: tt.c})
			tt.check(t, mustConfig(t, a.Image).Config)
		})
	}
}

func TestAssembleConfigErrors(t *testing.T) {
	tests := []struct {
		c    Config
		want string
	}{
		{Config{ExposedPorts: []string{"http"}}, `exposedPorts: "http" is not port`},
		{Config{ExposedPorts: []string{"80/icmp"}}, `exposedPorts: "80/icmp"`},
		{Config{ExposedPorts: []string{"0"}}, `exposedPorts: "0"`},
		{Config{Env: []EnvVar{{Name: "X", Value: "${"}}}, "env X: missing '}'"},
	}
	for _, tt := range tests {
		_, err := Assemble(Spec{Base: Scratch(DefaultPlatform), Config: tt.c})
		if err == nil || !strings.Contains(err.Error(), tt.want) || failure.ReasonOf(err) != failure.InvalidSpec {
			t.Errorf("Assemble(%+v) = %v, want InvalidSpec %q", tt.c, err, tt.want)
		}
	}
}

// pushDockerBase pushes a random Docker v2s2 image and resolves it.
func pushDockerBase(t *testing.T, reg *testkit.Registry) *Base {
	t.Helper()
	img, err := random.Image(2000, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf := mustConfig(t, img)
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(reg.Host + "/lib/base:1")
	if err := remote.Write(ref, img, remoteOpts()...); err != nil {
		t.Fatal(err)
	}
	b, err := FromRegistry(context.Background(), ref.String(), DefaultPlatform, remoteOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDockerBaseStaysDocker(t *testing.T) {
	reg := testkit.NewRegistry(t)
	base := pushDockerBase(t, reg)
	if !isDocker(t, base) || base.Digest != base.RefDigest {
		t.Fatalf("base: Docker=%v Digest=%s RefDigest=%s", isDocker(t, base), base.Digest, base.RefDigest)
	}
	a := mustAssemble(t, Spec{Base: base, Additions: []Addition{addition(t, "app", "x", "y")},
		Config: Config{Env: []EnvVar{{Name: "PATH", Value: "/app:$PATH"}}}})
	m := mustManifest(t, a.Image)
	if m.MediaType != types.DockerManifestSchema2 || m.Config.MediaType != types.DockerConfigJSON || len(m.Annotations) != 0 {
		t.Fatalf("manifest %s config %s annotations %v", m.MediaType, m.Config.MediaType, m.Annotations)
	}
	for i, l := range m.Layers {
		if l.MediaType != types.DockerLayer {
			t.Errorf("layer %d: %s", i, l.MediaType)
		}
	}
	if len(a.Notes) != 0 {
		t.Errorf("notes %v", a.Notes)
	}
	if got := mustConfig(t, a.Image).Config.Env; fmt.Sprint(got) != "[PATH=/app:/bin]" {
		t.Errorf("env %v", got)
	}
	// Base layers are mounted/skipped, not re-uploaded: push into another repo.
	res, err := registry.Push(context.Background(), a.Image, reg.Host+"/team/app:1", nil, regOptions())
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsUploaded != 2 { // the new layer and the config; base layers mounted
		t.Errorf("BlobsUploaded = %d, want 2", res.BlobsUploaded)
	}
}

func TestZstdOnDockerBaseConverts(t *testing.T) {
	reg := testkit.NewRegistry(t)
	base := pushDockerBase(t, reg)
	add := addition(t, "app", "x", "y")
	add.MediaType = types.OCILayerZStd // the bytes do not matter to assembly
	a := mustAssemble(t, Spec{Base: base, Additions: []Addition{add}, Zstd: true})
	m := mustManifest(t, a.Image)
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Fatalf("manifest %s config %s", m.MediaType, m.Config.MediaType)
	}
	want := []types.MediaType{types.OCILayer, types.OCILayer, types.OCILayerZStd}
	for i, l := range m.Layers {
		if l.MediaType != want[i] {
			t.Errorf("layer %d: %s, want %s", i, l.MediaType, want[i])
		}
	}
	if fmt.Sprint(a.Notes) != "["+NoteZstdOnDocker+"]" {
		t.Errorf("notes %v", a.Notes)
	}
	if m.Annotations[AnnotationBaseDigest] != base.Digest.String() {
		t.Errorf("annotations %v", m.Annotations)
	}
	ls, _ := a.Image.Layers()
	if _, ok := ls[0].(*remote.MountableLayer); !ok {
		t.Errorf("converted base layer is %T, want *remote.MountableLayer (cross-repo mount)", ls[0])
	}
	if _, err := registry.Push(context.Background(), a.Image, reg.Host+"/team/app:z", nil, regOptions()); err != nil {
		t.Fatal(err)
	}
}

func TestAnnotations(t *testing.T) {
	reg := testkit.NewRegistry(t)
	base := pushDockerBase(t, reg)
	a := mustAssemble(t, Spec{Base: base, Annotations: map[string]string{"org.opencontainers.image.source": "https://src"}})
	m := mustManifest(t, a.Image)
	if m.MediaType != types.OCIManifestSchema1 || fmt.Sprint(a.Notes) != "["+NoteAnnotationsOnDocker+"]" {
		t.Fatalf("manifest %s notes %v", m.MediaType, a.Notes)
	}
	want := map[string]string{
		"org.opencontainers.image.source": "https://src",
		AnnotationBaseName:                base.Name,
		AnnotationBaseDigest:              base.Digest.String(),
	}
	if fmt.Sprint(m.Annotations) != fmt.Sprint(want) {
		t.Fatalf("annotations %v, want %v", m.Annotations, want)
	}
	// An OCI registry base gets base.name/.digest without asking.
	ob := configBase(t, v1.Config{})
	m = mustManifest(t, mustAssemble(t, Spec{Base: ob}).Image)
	if m.Annotations[AnnotationBaseName] != "registry.test/base:1" || m.Annotations[AnnotationBaseDigest] != ob.Digest.String() {
		t.Fatalf("annotations %v", m.Annotations)
	}
}

func TestVerifyCatchesMismatches(t *testing.T) {
	add := addition(t, "app", "x", "y")

	wrongSize := add
	wrongSize.Size++
	a, err := Assemble(Spec{Base: Scratch(DefaultPlatform), Additions: []Addition{wrongSize}})
	if err != nil {
		t.Fatal(err)
	}
	err = Verify(a)
	if failure.ReasonOf(err) != failure.DigestMismatch || !strings.Contains(err.Error(), fmt.Sprintf("layer app: recorded size %d but the blob file", wrongSize.Size)) {
		t.Fatalf("wrong size: %v", err)
	}

	// A config whose diff_id disagrees with the layer's recorded DiffID.
	good := mustAssemble(t, Spec{Base: Scratch(DefaultPlatform), Additions: []Addition{add}})
	cf := mustConfig(t, good.Image)
	cf.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	raw, _ := encodeConfig(cf)
	ls, _ := good.Image.Layers()
	m := mustManifest(t, good.Image)
	img, err := newMemImage(m.MediaType, m.Config.MediaType, raw, ls, m.Layers, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := &Assembled{Image: img, layerNames: good.layerNames}
	err = Verify(bad)
	if failure.ReasonOf(err) != failure.DiffIDMismatch || !strings.Contains(err.Error(),
		"verifying layer app: config.rootfs.diff_ids has sha256:0000000000000000000000000000000000000000000000000000000000000000, the layer's DiffID is "+add.DiffID.String()) {
		t.Fatalf("wrong diff id: %v", err)
	}

	// A descriptor that lies about the digest.
	descs := append([]v1.Descriptor(nil), m.Layers...)
	descs[0].Digest = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}
	raw, _ = good.Image.RawConfigFile()
	img, _ = newMemImage(m.MediaType, m.Config.MediaType, raw, ls, descs, nil)
	err = Verify(&Assembled{Image: img})
	if failure.ReasonOf(err) != failure.DigestMismatch || !strings.Contains(err.Error(), "verifying layer 1: the manifest says digest sha256:1111") {
		t.Fatalf("wrong digest: %v", err)
	}

	// A manifest digest that is not the one recorded.
	tampered := *good
	tampered.Digest = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("2", 64)}
	if err := Verify(&tampered); failure.ReasonOf(err) != failure.DigestMismatch {
		t.Fatalf("wrong manifest digest: %v", err)
	}
}

func TestStoreLayerUncompressed(t *testing.T) {
	add := addition(t, "app", "f", "hello")
	l := StoreLayer(add, "")
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if testkit.Hash(b) != add.DiffID {
		t.Fatal("uncompressed bytes do not hash to the DiffID")
	}
	if mt, _ := l.MediaType(); mt != types.OCILayer {
		t.Fatalf("media type %s", mt)
	}
}

// foreign layers of a Windows base keep their media type and URLs and are
// never uploaded.
func TestWindowsForeignLayersStay(t *testing.T) {
	reg := testkit.NewRegistry(t)
	foreign := static.NewLayer([]byte("not really a layer"), types.DockerForeignLayer)
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: foreign, URLs: []string{"https://mcr.example/layer"}, MediaType: types.DockerForeignLayer})
	if err != nil {
		t.Fatal(err)
	}
	cf := mustConfig(t, img)
	cf.OS, cf.Architecture, cf.OSVersion = "windows", "amd64", "10.0.20348.2113"
	img, _ = mutate.ConfigFile(img, cf)
	ref, _ := name.ParseReference(reg.Host + "/win/base:ltsc")
	if err := remote.Write(ref, img, remoteOpts()...); err != nil {
		t.Fatal(err)
	}
	base, err := FromRegistry(context.Background(), ref.String(), v1.Platform{OS: "windows", Architecture: "amd64"}, remoteOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	if !base.Windows() || base.Platform.OSVersion != "10.0.20348.2113" {
		t.Fatalf("base platform %+v", base.Platform)
	}
	a := mustAssemble(t, Spec{Base: base, Additions: []Addition{addition(t, "app", "Files/app.exe", "MZ")}})
	m := mustManifest(t, a.Image)
	if m.Layers[0].MediaType != types.DockerForeignLayer || fmt.Sprint(m.Layers[0].URLs) != "[https://mcr.example/layer]" {
		t.Fatalf("foreign layer descriptor %+v", m.Layers[0])
	}
	if cf := mustConfig(t, a.Image); cf.OSVersion != "10.0.20348.2113" {
		t.Fatalf("os.version %q", cf.OSVersion)
	}
	before := reg.Count("PATCH blob") + reg.Count("PUT blob")
	res, err := registry.Push(context.Background(), a.Image, reg.Host+"/win/app:1", nil, regOptions())
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsUploaded != 2 || reg.Count("PATCH blob")+reg.Count("PUT blob")-before != 2*2 {
		t.Fatalf("uploaded %d blobs; the foreign layer must not be uploaded", res.BlobsUploaded)
	}
}
