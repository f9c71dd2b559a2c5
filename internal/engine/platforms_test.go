package engine

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/testkit"
)

// multiFixture is a three-platform build on an index base with an
// attestation entry: a ConfigMap layer shared by every platform, a layer
// with one variant per platform and a layer for linux/amd64 only.
type multiFixture struct {
	reg   *testkit.Registry
	files *testkit.FileServer
	base  testkit.Index
	ib    *kilnv1.ImageBuild
	in    Inputs
}

func newMultiFixture(t *testing.T) *multiFixture {
	t.Helper()
	f := &multiFixture{reg: testkit.NewRegistry(t), files: testkit.NewFileServer(t)}
	f.base = testkit.PushIndex(t, f.reg.Host+"/lib/base:1", testkit.IndexOptions{Attestation: true},
		"linux/amd64", "linux/arm64/v8", "windows/amd64:10.0.20348.2113")
	certs := testkit.Tar(t, testkit.Dir("etc/"), testkit.File("etc/ca.pem", "CA"))
	f.in = Inputs{ConfigMaps: map[string]map[string][]byte{"certs": {"ca.tar": certs}}}
	app := func(arch string) kilnv1.Source {
		return kilnv1.Source{URL: f.files.Put("/app-"+arch+".tgz", testkit.Gzip(t, testkit.Tar(t, testkit.File("app/arch", arch))))}
	}
	f.ib = imageBuild("multi", f.reg.Host+"/team/base:1.0")
	f.ib.Spec.Base = &kilnv1.Base{Image: f.base.Ref}
	f.ib.Spec.Platforms = []kilnv1.PlatformBuild{
		{Platform: "linux/amd64"}, {Platform: "linux/arm64/v8"},
		{Platform: "windows/amd64:10.0.20348", Config: &kilnv1.ImageConfig{Entrypoint: []string{`C:\app\app.exe`}}},
	}
	f.ib.Spec.Config = &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "APP", Value: "1"}}, Entrypoint: []string{"/app/run"}}
	f.ib.Spec.Layers = []kilnv1.Layer{
		{Name: "certs", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "certs", Key: "ca.tar"}}},
		{Name: "app", Variants: []kilnv1.LayerVariant{
			{Platform: "linux/amd64", Source: app("amd64")},
			{Platform: "linux/arm64", Source: app("arm64")},
			{Platform: "windows/amd64", Source: app("windows")},
		}},
		{Name: "debug", Platforms: []string{"linux/amd64"}, Source: &kilnv1.Source{URL: f.files.Put("/busybox.tgz", testkit.Gzip(t, testkit.Tar(t, testkit.File("bin/busybox", "bb"))))}},
	}
	f.reg.Reset() // count only what builds do
	return f
}

func pullIndex(t *testing.T, ref string) v1.ImageIndex {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatalf("pulling index %s: %v", ref, err)
	}
	return idx
}

func TestIndexOfThreePlatformsFromAnIndexBase(t *testing.T) {
	f := newMultiFixture(t)
	res, err := newEngine(t, "").Build(context.Background(), f.ib, f.in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// certs: once for the Linux shaping, once for Windows; app: three
	// variants; debug: one platform.
	if res.Encoded != 6 {
		t.Errorf("layers encoded = %d, want 6 (a shared layer once per shaping)", res.Encoded)
	}
	if got := f.reg.Count("PUT manifest"); got != 4 {
		t.Errorf("manifest PUTs = %d, want 4 (three images, then the index once)", got)
	}
	st := res.Status
	if st.MediaType != string(types.OCIImageIndex) || len(st.Manifests) != 3 || st.ConfigDigest != "" {
		t.Fatalf("status = %+v, want an OCI index of 3 images", st)
	}
	if strings.Join(st.Platforms, ",") != "linux/amd64,linux/arm64/v8,windows/amd64:10.0.20348" {
		t.Errorf("status.platforms = %v", st.Platforms)
	}
	if st.Base == nil || st.Base.RefDigest != f.base.Digest.String() || st.Base.Digest != f.base.Digest.String() {
		t.Errorf("status.base = %+v, want the base index %s", st.Base, f.base.Digest)
	}

	idx := pullIndex(t, f.ib.Spec.Target.Image)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.Annotations[image.AnnotationBaseDigest] != f.base.Digest.String() || im.Annotations[image.AnnotationBaseName] != f.base.Ref {
		t.Errorf("index annotations = %v, want the base index's name and digest", im.Annotations)
	}
	wantPlat := []string{"linux/amd64", "linux/arm64/v8", "windows/amd64:10.0.20348.2113"}
	wantBase := []string{"linux/amd64", "linux/arm64/v8", "windows/amd64:10.0.20348.2113"}
	wantLayers := [][]string{{"certs", "app", "debug"}, {"certs", "app"}, {"certs", "app"}}
	for i, d := range im.Manifests {
		if d.Platform == nil || d.Platform.String() != wantPlat[i] {
			t.Errorf("index entry %d platform = %v, want %s", i, d.Platform, wantPlat[i])
		}
		ms := st.Manifests[i]
		if ms.Platform != wantPlat[i] || ms.Digest != d.Digest.String() || ms.Size != d.Size {
			t.Errorf("manifests[%d] = %+v, index entry %+v", i, ms, d)
		}
		if ms.Base == nil || ms.Base.Digest != f.base.Children[wantBase[i]].String() || ms.Base.RefDigest != f.base.Digest.String() {
			t.Errorf("manifests[%d].base = %+v, want child %s of %s", i, ms.Base, f.base.Children[wantBase[i]], f.base.Digest)
		}
		var names []string
		for _, l := range ms.Layers {
			names = append(names, l.Name)
		}
		if strings.Join(names, ",") != strings.Join(wantLayers[i], ",") {
			t.Errorf("manifests[%d] layers = %v, want %v", i, names, wantLayers[i])
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := img.Manifest()
		if m.Annotations[image.AnnotationBaseDigest] != f.base.Children[wantBase[i]].String() {
			t.Errorf("image %d base annotation = %q, want its own base child %s", i, m.Annotations[image.AnnotationBaseDigest], f.base.Children[wantBase[i]])
		}
		cf, _ := img.ConfigFile()
		if i == 2 && strings.Join(cf.Config.Entrypoint, " ") != `C:\app\app.exe` {
			t.Errorf("windows entrypoint = %q, want the platform's config over spec.config", cf.Config.Entrypoint)
		}
		if i < 2 && (strings.Join(cf.Config.Entrypoint, " ") != "/app/run" || cf.Config.Env[len(cf.Config.Env)-1] != "APP=1") {
			t.Errorf("linux config = %+v, want spec.config", cf.Config)
		}
	}
	if st.Manifests[0].Layers[0].DiffID != st.Manifests[1].Layers[0].DiffID || st.Manifests[0].Layers[0].DiffID == st.Manifests[2].Layers[0].DiffID {
		t.Errorf("certs diffIDs = %s %s %s, want Linux twice the same and Windows shaped differently",
			st.Manifests[0].Layers[0].DiffID, st.Manifests[1].Layers[0].DiffID, st.Manifests[2].Layers[0].DiffID)
	}
}

func TestOnePlatformIndexChildIsTheSingleImage(t *testing.T) {
	for _, base := range []string{"scratch", "index"} {
		t.Run(base, func(t *testing.T) {
			f := newMultiFixture(t)
			single := imageBuild("single", f.reg.Host+"/team/single:1", f.ib.Spec.Layers[0])
			single.Spec.Config = f.ib.Spec.Config
			if base == "index" {
				single.Spec.Base = &kilnv1.Base{Image: f.base.Ref}
			}
			one := single.DeepCopy()
			one.Spec.Target.Image = f.reg.Host + "/team/one:1"
			one.Spec.Platforms = []kilnv1.PlatformBuild{{Platform: "linux/amd64"}}
			eng := newEngine(t, "")
			a, err := eng.Build(context.Background(), single, f.in, Options{})
			if err != nil {
				t.Fatal(err)
			}
			b, err := eng.Build(context.Background(), one, f.in, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if b.Status.Manifests[0].Digest != a.Status.Digest {
				t.Errorf("one-platform index child = %s, single-platform image = %s", b.Status.Manifests[0].Digest, a.Status.Digest)
			}
		})
	}
}

func TestIndexReproducibleAcrossCachesAndGOMAXPROCS(t *testing.T) {
	f := newMultiFixture(t)
	var digests []string
	for _, procs := range []int{1, 2} {
		prev := runtime.GOMAXPROCS(procs)
		res, err := newEngine(t, "").Build(context.Background(), f.ib.DeepCopy(), f.in, Options{DryRun: true})
		runtime.GOMAXPROCS(prev)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, res.Status.Digest+" "+res.Status.InputDigest)
	}
	if digests[0] != digests[1] {
		t.Errorf("digests differ: %v", digests)
	}
}

func TestUnchangedIndexRebuildWritesNothing(t *testing.T) {
	f := newMultiFixture(t)
	f.ib.Spec.Target.Tags = []string{"latest"}
	eng := newEngine(t, "")
	first, err := eng.Build(context.Background(), f.ib, f.in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.reg.Reset()
	again, err := eng.Build(context.Background(), f.ib, f.in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.UpToDate || again.Status.Digest != first.Status.Digest || f.reg.Writes() != 0 {
		t.Errorf("rebuild: upToDate=%t digest %s (first %s), %d writes; want up to date with 0 writes",
			again.UpToDate, again.Status.Digest, first.Status.Digest, f.reg.Writes())
	}
}

func TestIndexWithOneFailingPlatformPushesNothing(t *testing.T) {
	f := newMultiFixture(t)
	f.ib.Spec.Layers[1].Variants[1].Source.URL = f.files.Put("/broken.tgz", []byte("not a tarball at all, not even gzip"))
	_, err := newEngine(t, "").Build(context.Background(), f.ib, f.in, Options{})
	if err == nil {
		t.Fatal("build succeeded")
	}
	if !strings.HasPrefix(err.Error(), `platform linux/arm64/v8: layer "app"`) || !failure.IsPermanent(err) {
		t.Errorf("err = %v, want it to name the platform and the layer", err)
	}
	if f.reg.Writes() != 0 {
		t.Errorf("%d writes to the registry, want none", f.reg.Writes())
	}
}

func TestIndexBaseWithoutAPlatform(t *testing.T) {
	f := newMultiFixture(t)
	f.ib.Spec.Platforms = append(f.ib.Spec.Platforms, kilnv1.PlatformBuild{Platform: "linux/s390x"})
	f.ib.Spec.Layers[1].Variants = append(f.ib.Spec.Layers[1].Variants, kilnv1.LayerVariant{Platform: "linux/s390x", Source: f.ib.Spec.Layers[1].Variants[0].Source})
	_, err := newEngine(t, "").Build(context.Background(), f.ib, f.in, Options{})
	want := "platforms linux/amd64, linux/arm64/v8, windows/amd64:10.0.20348, linux/s390x: resolving base " + f.base.Ref +
		": base " + f.base.Ref + " has no linux/s390x image; it has: linux/amd64, linux/arm64/v8, windows/amd64:10.0.20348.2113"
	if failure.ReasonOf(err) != failure.PlatformNotFound || err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

func TestPlatformBaseOverrideAndDockerList(t *testing.T) {
	reg := testkit.NewRegistry(t)
	docker := testkit.PushIndex(t, reg.Host+"/lib/docker:1", testkit.IndexOptions{Docker: true}, "linux/amd64", "linux/arm64")
	win := testkit.PushIndex(t, reg.Host+"/lib/nanoserver:ltsc2022", testkit.IndexOptions{}, "windows/amd64:10.0.20348.1")
	ib := imageBuild("docker", reg.Host+"/team/docker:1")
	ib.Spec.Base = &kilnv1.Base{Image: docker.Ref}
	ib.Spec.Platforms = []kilnv1.PlatformBuild{{Platform: "linux/amd64"}, {Platform: "linux/arm64"}}
	res, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status.MediaType != string(types.DockerManifestList) {
		t.Errorf("media type = %s, want a Docker manifest list on a Docker base", res.Status.MediaType)
	}
	ib.Spec.Platforms = append(ib.Spec.Platforms, kilnv1.PlatformBuild{Platform: "windows/amd64", Base: &kilnv1.Base{Image: win.Ref}})
	res, err = newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status.MediaType != string(types.OCIImageIndex) {
		t.Errorf("media type = %s, want an OCI index once a child is OCI", res.Status.MediaType)
	}
	if b := res.Status.Manifests[2].Base; b == nil || b.Image != win.Ref || b.Digest != win.Children["windows/amd64:10.0.20348.1"].String() {
		t.Errorf("windows base = %+v, want the override's child", b)
	}
}

func TestVariantMatching(t *testing.T) {
	for _, tc := range []struct {
		names []string
		plat  string
		want  int
	}{
		{[]string{"linux/amd64", "linux/arm64"}, "linux/arm64/v8", 1},
		{[]string{"linux/arm64", "linux/arm64/v8"}, "linux/arm64/v8", 1},
		{[]string{"linux/arm64/v8"}, "linux/arm64", -1},
		{[]string{"linux/arm"}, "linux/arm64", -1},
		{[]string{"windows/amd64", "windows/amd64:10.0"}, "windows/amd64:10.0.20348", 1},
		{[]string{"windows/amd64:10.0.2"}, "windows/amd64:10.0.20348", -1},
		{[]string{"windows/amd64:10.0.20348"}, "windows/amd64:10.0.20348", 0},
		{[]string{"linux/amd64"}, "windows/amd64", -1},
	} {
		if got := bestMatch(tc.names, tc.plat); got != tc.want {
			t.Errorf("bestMatch(%v, %s) = %d, want %d", tc.names, tc.plat, got, tc.want)
		}
	}
}

func TestSamePlatformTwiceIsASpecError(t *testing.T) {
	spec := &kilnv1.ImageBuildSpec{Platforms: []kilnv1.PlatformBuild{{Platform: "linux/arm64"}, {Platform: "linux/arm64/v8"}}}
	_, err := childrenOf(spec)
	if failure.ReasonOf(err) != failure.InvalidSpec || !strings.Contains(err.Error(), `platforms "linux/arm64" and "linux/arm64/v8" name the same platform`) {
		t.Errorf("err = %v", err)
	}
}

func TestOverlayConfig(t *testing.T) {
	base := &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}},
		Entrypoint: []string{"/run"}, Cmd: []string{"serve"}, User: "1000", Labels: map[string]string{"a": "1"}}
	for _, tc := range []struct {
		name string
		over *kilnv1.ImageConfig
		want func(c *kilnv1.ImageConfig) bool
	}{
		{"nil keeps spec.config", nil, func(c *kilnv1.ImageConfig) bool { return c == base }},
		{"env merged by name", &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "B", Value: "3"}, {Name: "C", Value: "4"}}},
			func(c *kilnv1.ImageConfig) bool {
				return len(c.Env) == 3 && c.Env[1].Value == "3" && c.Env[2].Name == "C" && c.Cmd[0] == "serve"
			}},
		{"entrypoint clears cmd", &kilnv1.ImageConfig{Entrypoint: []string{`C:\app.exe`}},
			func(c *kilnv1.ImageConfig) bool {
				return c.Entrypoint[0] == `C:\app.exe` && c.Cmd == nil && c.User == "1000"
			}},
		{"labels merged", &kilnv1.ImageConfig{Labels: map[string]string{"b": "2"}, User: "ContainerUser"},
			func(c *kilnv1.ImageConfig) bool {
				return c.Labels["a"] == "1" && c.Labels["b"] == "2" && c.User == "ContainerUser"
			}},
	} {
		got := overlayConfig(base, tc.over)
		if !tc.want(got) {
			t.Errorf("%s: got %+v", tc.name, got)
		}
	}
	if len(base.Env) != 2 || base.Env[1].Value != "2" || len(base.Labels) != 1 {
		t.Errorf("overlay modified spec.config: %+v", base)
	}
}

func TestLayerSharedByLinuxAndWindowsIsFetchedOnce(t *testing.T) {
	f := newMultiFixture(t)
	shared := testkit.Tar(t, testkit.Dir("etc/"), testkit.File("etc/motd", strings.Repeat("hello\n", 50000)))
	url := f.files.Put("/shared.tar.gz", testkit.Gzip(t, shared))
	f.ib.Spec.Platforms = []kilnv1.PlatformBuild{{Platform: "linux/amd64"}, {Platform: "windows/amd64"}}
	f.ib.Spec.Layers = []kilnv1.Layer{{Name: "shared", Source: &kilnv1.Source{URL: url}}}
	res, err := newEngine(t, "").Build(context.Background(), f.ib, f.in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := f.files.Downloads("/shared.tar.gz"); n != 1 {
		t.Errorf("shared layer downloaded %d times, want once for both shapings", n)
	}
	lin, win := res.Status.Manifests[0].Layers[0], res.Status.Manifests[1].Layers[0]
	if res.Encoded != 2 || lin.DiffID != testkit.Digest(shared) || win.DiffID == lin.DiffID || win.SourceDigest != lin.SourceDigest {
		t.Errorf("encoded %d; linux %+v; windows %+v; want two encodes of one fetch, the Linux one byte-exact", res.Encoded, lin, win)
	}

	// Broken input: both shapings fail, the fetch stops, nothing is pushed.
	f.reg.Reset()
	f.ib.Spec.Layers[0].Source.URL = f.files.Put("/shared-bad.tar.gz", testkit.Gzip(t, shared[:1024+100000]))
	f.ib.Spec.Target.Image = f.reg.Host + "/team/bad:1"
	_, err = newEngine(t, "").Build(context.Background(), f.ib, f.in, Options{})
	if err == nil || !strings.Contains(err.Error(), `layer "shared"`) || f.reg.Writes() != 0 {
		t.Errorf("err = %v, %d writes; want an error naming the layer and no writes", err, f.reg.Writes())
	}
}
