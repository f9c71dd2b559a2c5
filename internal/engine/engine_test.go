package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

func pull(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	return img
}

// layerTar returns the uncompressed bytes of the image's layer i.
func layerTar(t *testing.T, img v1.Image, i int) []byte {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return testkit.ReadAll(t, ls[i].Uncompressed)
}

func TestScratchXzLayerAndEnvInOneManifestPut(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	rootfs := testkit.Tar(t, testkit.Dir("bin/"), testkit.File("bin/sh", "#!busybox"), testkit.Symlink("bin/ls", "/bin/busybox"), testkit.Dir("etc/"), testkit.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n"))
	ib := imageBuild("app", reg.Host+"/team/app:1.0", urlLayer("rootfs", files.Put("/rootfs.tar.xz", testkit.Xz(t, rootfs))))
	ib.Spec.Config = &kilnv1.ImageConfig{
		Env:        []kilnv1.EnvVar{{Name: "PATH", Value: "/app/bin:$PATH"}, {Name: "APP", Value: "1"}},
		Entrypoint: []string{"/bin/sh"}, WorkingDir: "/app", User: "65532:65532",
		Labels: map[string]string{"team": "a"},
	}
	res, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := reg.Count("PUT manifest"); got != 1 {
		t.Errorf("manifest PUTs = %d, want exactly 1 (one pass, no append-then-mutate)", got)
	}
	img := pull(t, res.Status.Image)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"PATH=/app/bin:", "APP=1"}; strings.Join(cf.Config.Env, ",") != strings.Join(want, ",") {
		t.Errorf("env = %q, want %q ($PATH expands against the empty scratch env)", cf.Config.Env, want)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("os/arch = %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if len(cf.History) != 1 || !strings.Contains(cf.History[0].CreatedBy, "rootfs") {
		t.Errorf("history = %+v, want one entry naming the layer", cf.History)
	}
	if want := testkit.Digest(rootfs); len(cf.RootFS.DiffIDs) != 1 || cf.RootFS.DiffIDs[0].String() != want {
		t.Errorf("diff_ids = %v, want [%s] (sha256 of the uncompressed tar, not of the xz bytes)", cf.RootFS.DiffIDs, want)
	}
	if got := layerTar(t, img, 0); !bytes.Equal(got, rootfs) {
		t.Errorf("pushed layer does not decompress to the input tar (%d vs %d bytes)", len(got), len(rootfs))
	}
	l := res.Status.Layers[0]
	if l.SourceCompression != "xz" || l.DiffID != testkit.Digest(rootfs) || l.SourceDigest == "" || l.Digest == "" {
		t.Errorf("layer status = %+v", l)
	}
	if res.Status.InputDigest == "" || res.Status.ConfigDigest == "" || res.Status.Digest == "" {
		t.Errorf("status lacks digests: %+v", res.Status)
	}
}

func TestSecondBuildIsUpToDateWithoutWrites(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	url := files.Put("/app.tar.gz", testkit.Gzip(t, testkit.Tar(t, testkit.File("app/run", "x"))))
	ib := imageBuild("app", reg.Host+"/team/app:1.0", urlLayer("app", url))
	ib.Spec.Target.Tags = []string{"latest", "stable"}
	first, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if first.UpToDate {
		t.Fatal("first build reported upToDate")
	}
	reg.Reset()
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	second, err := newEngine(t, "").Build(context.Background(), ib.DeepCopy(), Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if second.Status.Digest != first.Status.Digest {
		t.Errorf("digest differs across cache dirs and GOMAXPROCS: %s vs %s", second.Status.Digest, first.Status.Digest)
	}
	if !second.UpToDate || reg.Writes() != 0 {
		t.Errorf("second build: upToDate=%v, registry writes=%d; want true, 0", second.UpToDate, reg.Writes())
	}
}

func TestGzipDockerSaveArchiveBase(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	base, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config.Env = "linux", "amd64", []string{"PATH=/usr/bin"}
	base, err = mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatal(err)
	}
	var saved bytes.Buffer
	tag, _ := name.NewTag("base:1")
	if err := tarball.Write(tag, base, &saved); err != nil {
		t.Fatal(err)
	}
	ib := imageBuild("app", reg.Host+"/team/app:1.0", urlLayer("app", files.Put("/app.tar", testkit.Tar(t, testkit.File("app", "x")))))
	ib.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: files.Put("/base.tar.gz", testkit.Gzip(t, saved.Bytes()))}}}
	ib.Spec.Config = &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "PATH", Value: "/app:$PATH"}}}
	res, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	if err != nil {
		t.Fatalf("docker save | gzip base: %v", err)
	}
	cf, err = pull(t, res.Status.Image).ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.RootFS.DiffIDs) != 3 {
		t.Errorf("diff_ids = %d, want 2 base + 1 added", len(cf.RootFS.DiffIDs))
	}
	if got := strings.Join(cf.Config.Env, ","); got != "PATH=/app:/usr/bin" {
		t.Errorf("env = %q, want PATH=/app:/usr/bin", got)
	}
}

func TestWindowsBaseWithTarDotLayer(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	baseLayer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(testkit.Tar(t, testkit.Dir("Files/"), testkit.Dir("Files/Windows/"), testkit.Dir("Hives/"), testkit.File("Hives/Software_Base", "hive")))), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	base, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), baseLayer)
	if err != nil {
		t.Fatal(err)
	}
	base, err = mutate.ConfigFile(base, &v1.ConfigFile{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2113",
		RootFS: v1.RootFS{Type: "layers", DiffIDs: mustDiffIDs(t, base)}})
	if err != nil {
		t.Fatal(err)
	}
	baseRef := reg.Host + "/windows/nanoserver:ltsc2022"
	if err := remote.Write(mustRef(t, baseRef), base); err != nil {
		t.Fatal(err)
	}
	// What `tar -C dir .` produces: a "./" root entry and "./"-prefixed paths.
	layer := testkit.Tar(t, testkit.Dir("./"), testkit.Dir("./app/"), testkit.File("./app/server.exe", "MZ"))
	ib := imageBuild("win", reg.Host+"/team/win:1.0", urlLayer("app", files.Put("/win.tar.gz", testkit.Gzip(t, layer))))
	ib.Spec.Base = &kilnv1.Base{Image: baseRef}
	res, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := pull(t, res.Status.Image)
	cf, _ := img.ConfigFile()
	if cf.OSVersion != "10.0.20348.2113" || cf.OS != "windows" {
		t.Errorf("os/os.version = %s/%s, want windows/10.0.20348.2113", cf.OS, cf.OSVersion)
	}
	tr := tar.NewReader(bytes.NewReader(layerTar(t, img, 1)))
	seen := map[string]int{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[strings.TrimSuffix(h.Name, "/")]++
		if !strings.HasPrefix(h.Name, "Files") && !strings.HasPrefix(h.Name, "Hives") {
			t.Errorf("entry %q is outside Files/ and Hives/", h.Name)
		}
	}
	for p, n := range seen {
		if n > 1 {
			t.Errorf("duplicate path %q (%d times)", p, n)
		}
	}
	if seen["Files"] != 1 || seen["Files/app/server.exe"] != 1 {
		t.Errorf("entries = %v, want Files once and Files/app/server.exe", seen)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustDiffIDs(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		d, err := l.DiffID()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func TestEightParallelBuildsWithIdenticalEmptyLayers(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	empty := testkit.Tar(t)
	url := files.Put("/empty.tar", empty)
	engine := newEngine(t, "")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ib := imageBuild(fmt.Sprintf("b%d", i), fmt.Sprintf("%s/team/b%d:1", reg.Host, i),
				urlLayer("one", url), urlLayer("two", url), urlLayer("three", url))
			ib.Spec.Config = &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "N", Value: fmt.Sprint(i)}}}
			_, errs[i] = engine.Build(context.Background(), ib, Inputs{}, Options{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("build %d: %v", i, err)
		}
	}
	blobs, err := listBlobs(engine)
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 1 {
		t.Errorf("blob store holds %d blobs, want exactly 1 (the empty layer, encoded once)", len(blobs))
	}
	if tmp, _ := engine.Store.TempFiles(); len(tmp) != 0 {
		t.Errorf("temp files left: %v", tmp)
	}
}

func TestRetriesEndWithTheSameDigest(t *testing.T) {
	files := testkit.NewFileServer(t)
	url := files.Put("/app.tar", testkit.Tar(t, testkit.File("app/a", strings.Repeat("kiln ", 50000)), testkit.File("app/b", "b")))
	clean := testkit.NewRegistry(t)
	ib := imageBuild("app", clean.Host+"/team/app:1", urlLayer("app", url))
	want, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}

	faulty := testkit.NewRegistry(t)
	var mu sync.Mutex
	seen := map[string]int{}
	var reset atomic.Bool
	fault := func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		seen[r.Method]++
		n := seen[r.Method]
		mu.Unlock()
		if r.URL.Path != "/v2/" && n <= 2 {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return true
		}
		if r.Method == http.MethodPatch || (r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/")) {
			if reset.CompareAndSwap(false, true) {
				// Reset the connection in the middle of a blob upload.
				_, _ = io.CopyN(io.Discard, r.Body, 100)
				if hj, ok := w.(http.Hijacker); ok {
					if c, _, err := hj.Hijack(); err == nil {
						if tc, ok := c.(*net.TCPConn); ok {
							_ = tc.SetLinger(0)
						}
						_ = c.Close()
						return true
					}
				}
			}
		}
		return false
	}
	faulty.SetFault(fault)
	ib2 := imageBuild("app", faulty.Host+"/team/app:1", urlLayer("app", url))
	got, err := newEngine(t, "").Build(context.Background(), ib2, Inputs{}, Options{})
	if err != nil {
		t.Fatalf("build through faults: %v", err)
	}
	if got.Status.Digest != want.Status.Digest {
		t.Errorf("digest through faults %s, clean %s", got.Status.Digest, want.Status.Digest)
	}
	if !reset.Load() {
		t.Error("the upload reset was never injected")
	}
}

func TestPermanentErrorsNameTheProblemAndPushNothing(t *testing.T) {
	files := testkit.NewFileServer(t)
	good := testkit.Tar(t, testkit.File("a", "a"))
	goodURL := files.Put("/good.tar", good)
	badURL := files.Put("/bad.tar", []byte("<html>not a tarball</html>"))
	xzURL := files.Put("/x.tar.xz", testkit.Xz(t, good))
	tests := []struct {
		name   string
		layer  kilnv1.Layer
		in     Inputs
		reason failure.Reason
		want   string
	}{
		{"digest mismatch", kilnv1.Layer{Name: "l", Source: &kilnv1.Source{URL: goodURL}, Digest: "sha256:" + strings.Repeat("0", 64)},
			Inputs{}, failure.DigestMismatch, "sha256:" + strings.Repeat("0", 64)},
		{"diffID mismatch", kilnv1.Layer{Name: "l", Source: &kilnv1.Source{URL: goodURL}, DiffID: "sha256:" + strings.Repeat("1", 64)},
			Inputs{}, failure.DiffIDMismatch, testkit.Digest(good)},
		{"not a tar", urlLayer("l", badURL), Inputs{}, failure.InvalidLayer, "not a tar archive"},
		{"declared gzip on xz", kilnv1.Layer{Name: "l", Source: &kilnv1.Source{URL: xzURL}, Compression: kilnv1.CompressionGzip},
			Inputs{}, failure.InvalidLayer, "xz"},
		{"404", urlLayer("l", files.URL+"/missing.tar"), Inputs{}, failure.SourceNotFound, "404"},
		{"missing ConfigMap", kilnv1.Layer{Name: "l", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "cm", Key: "k"}}},
			Inputs{}, failure.SourceNotFound, `ConfigMap "cm" not found`},
		{"missing key", kilnv1.Layer{Name: "l", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "cm", Key: "k"}}},
			Inputs{ConfigMaps: map[string]map[string][]byte{"cm": {"other": good}}}, failure.SourceNotFound, `has no key "k"`},
		{"missing Secret", kilnv1.Layer{Name: "l", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "s", Key: "k"}}},
			Inputs{}, failure.SourceNotFound, `Secret "s" not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := testkit.NewRegistry(t)
			ib := imageBuild("app", reg.Host+"/team/app:1", tt.layer)
			_, err := newEngine(t, "").Build(context.Background(), ib, tt.in, Options{})
			if err == nil {
				t.Fatal("build succeeded")
			}
			if !failure.IsPermanent(err) || failure.ReasonOf(err) != tt.reason {
				t.Errorf("reason = %s (permanent %v), want permanent %s: %v", failure.ReasonOf(err), failure.IsPermanent(err), tt.reason, err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"l"`) {
				t.Errorf("error %q should name the layer and contain %q", err, tt.want)
			}
			if w := reg.Writes(); w != 0 {
				t.Errorf("%d registry writes for a failed build", w)
			}
		})
	}
}

func TestInvalidTargetIsInvalidSpec(t *testing.T) {
	ib := imageBuild("app", "Not A Reference!!", kilnv1.Layer{Name: "l", Source: &kilnv1.Source{URL: "http://127.0.0.1:1/x"}})
	_, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	if failure.ReasonOf(err) != failure.InvalidSpec || !strings.Contains(err.Error(), "target.image") {
		t.Fatalf("want InvalidSpec naming target.image, got %v", err)
	}
}

func TestPlanDoesNotPush(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	ib := imageBuild("app", reg.Host+"/team/app:1", urlLayer("l", files.Put("/l.tar", testkit.Tar(t, testkit.File("a", "a")))))
	res, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.WouldPush || reg.Writes() != 0 || res.Status.Digest == "" {
		t.Errorf("plan: wouldPush=%v writes=%d digest=%q", res.WouldPush, reg.Writes(), res.Status.Digest)
	}
}

// listBlobs returns the blob files of the engine's store.
func listBlobs(e *Engine) ([]string, error) {
	// Every blob lives in the directory Path names for any of them.
	return filepath.Glob(filepath.Join(filepath.Dir(e.Store.Path(v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)})), "*"))
}

func TestUnpinnedURLIsNotDownloadedTwice(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	url := files.Put("/app.tar", testkit.Tar(t, testkit.File("a", "a")))
	engine := newEngine(t, "")
	for i := range 3 {
		ib := imageBuild(fmt.Sprintf("b%d", i), fmt.Sprintf("%s/team/b%d:1", reg.Host, i), urlLayer("l", url))
		res, err := engine.Build(context.Background(), ib, Inputs{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && res.CacheHits != 1 {
			t.Errorf("build %d: cache hits = %d, want 1 (304 Not Modified)", i, res.CacheHits)
		}
	}
	if got := files.Requests("/app.tar"); got != 3 {
		t.Errorf("GETs = %d, want 3 (one download, then two conditional requests)", got)
	}
}

func TestLayersPushedBeforeAreMountedFromTheirRepository(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	big := testkit.Tar(t, testkit.File("data", strings.Repeat("kiln mounts ", 100000)))
	url := files.Put("/big.tar", big)
	engine := newEngine(t, "")
	if _, err := engine.Build(context.Background(), imageBuild("a", reg.Host+"/team/a:1", urlLayer("l", url)), Inputs{}, Options{}); err != nil {
		t.Fatal(err)
	}
	reg.Reset()
	res, err := engine.Build(context.Background(), imageBuild("b", reg.Host+"/other/b:1", urlLayer("l", url)), Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := reg.Count("PUT blob"); got != 1 {
		t.Errorf("%d blob uploads completed; want only the config uploaded and the layer mounted", got)
	}
	if got := reg.Count("POST mount"); got != 1 {
		t.Errorf("%d cross-repository mounts, want 1", got)
	}
	if res.BytesOut > int64(len(big))/2 {
		t.Errorf("bytes out = %d; the layer should have been mounted", res.BytesOut)
	}
	if got := layerTar(t, pull(t, res.Status.Image), 0); !bytes.Equal(got, big) {
		t.Error("mounted layer does not hold the tar")
	}
}

// A cache smaller than one layer evicts on every commit. The layer a build
// just encoded is committed pinned, so the build still pushes it instead of
// failing with "evicted from the cache before the push", and the blob is
// evictable again once the build is done.
func TestLayerSurvivesEvictionBetweenCommitAndPush(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	url := files.Put("/app.tar", testkit.Tar(t, testkit.File("a", strings.Repeat("a", 64<<10))))
	engine := newEngine(t, "")
	store, err := blobstore.Open(t.TempDir(), blobstore.Options{MaxBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	engine.Store = store
	res, err := engine.Build(context.Background(), imageBuild("a", reg.Host+"/team/a:1", urlLayer("l", url)), Inputs{}, Options{})
	if err != nil {
		t.Fatalf("build with a 1-byte cache: %v", err)
	}
	if len(res.Status.Layers) != 1 {
		t.Fatalf("status %+v", res.Status)
	}
	if err := store.Evict(); err != nil {
		t.Fatal(err)
	}
	if blobs, _ := listBlobs(engine); len(blobs) != 0 {
		t.Errorf("blobs still pinned after the build: %v", blobs)
	}
}

// A fetch shared by several builds hands its commit pin to exactly one.
func TestHandoffGivesThePinToOneCaller(t *testing.T) {
	released := 0
	h := &handoff{release: func() { released++ }}
	first, second := h.take(), h.take()
	if first == nil || second != nil {
		t.Fatalf("take: first %v, second %v; want the release func once", first != nil, second != nil)
	}
	first()
	if released != 1 {
		t.Fatalf("released %d times", released)
	}
	if (*handoff)(nil).take() != nil {
		t.Fatal("a cached layer has no pin to hand off")
	}
}
