package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/ulikunitz/xz"

	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/testkit"
)

type tarEntry struct {
	name, link string // link set: a symlink
	data       []byte
}

func writeTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}
		if e.link != "" {
			hdr = &tar.Header{Name: e.name, Linkname: e.link, Mode: 0o777, Typeflag: tar.TypeSymlink}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func newStore(t *testing.T) *blobstore.Store {
	t.Helper()
	s, err := blobstore.Open(t.TempDir(), blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dockerSave builds a legacy `docker save` tarball of a random image with
// three layers, the third a symlink to the first (docker dedups that way).
func dockerSave(t *testing.T) ([]byte, [][]byte, *v1.ConfigFile) {
	t.Helper()
	img, err := random.Image(3000, 2)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	var tars [][]byte
	var entries []tarEntry
	var paths []string
	for i, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		tars = append(tars, b)
		id := fmt.Sprintf("%064d", i+1)
		entries = append(entries,
			tarEntry{name: id + "/VERSION", data: []byte("1.0")},
			tarEntry{name: id + "/json", data: []byte("{}")},
			tarEntry{name: id + "/layer.tar", data: b})
		paths = append(paths, id+"/layer.tar")
	}
	entries = append(entries, tarEntry{name: fmt.Sprintf("%064d", 9) + "/layer.tar", link: "../" + paths[0]})
	paths = append(paths, fmt.Sprintf("%064d", 9)+"/layer.tar")
	tars = append(tars, tars[0])

	cf := mustConfig(t, img)
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/usr/bin"}
	cf.RootFS.DiffIDs = []v1.Hash{testkit.Hash(tars[0]), testkit.Hash(tars[1]), testkit.Hash(tars[0])}
	rawCfg, _ := json.Marshal(cf)
	cfgName := testkit.Hash(rawCfg).Hex + ".json"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{"app:1"}, "Layers": paths}})
	entries = append(entries,
		tarEntry{name: cfgName, data: rawCfg},
		tarEntry{name: "repositories", data: []byte(`{"app":{"1":"x"}}`)},
		tarEntry{name: "manifest.json", data: manifest})
	return writeTar(t, entries), tars, cf
}

func TestFromArchiveGzippedDockerSave(t *testing.T) {
	archive, tars, cf := dockerSave(t)
	store := newStore(t)
	b, err := FromArchive(context.Background(), bytes.NewReader(testkit.Gzip(t, archive)), store, DefaultPlatform, "archive url https://x/app.tar.gz", ArchiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if !isDocker(t, b) || !b.Archive || b.Scratch || b.Platform.OS != "linux" {
		t.Fatalf("base %+v", b)
	}
	if got := strings.Join(b.Notes, "|"); !strings.Contains(got, "compressed 3 uncompressed base layer(s) with gzip") || !strings.Contains(got, "gzip-compressed") {
		t.Errorf("notes %q", got)
	}
	ls, _ := b.Image.Layers()
	if len(ls) != 3 {
		t.Fatalf("%d layers", len(ls))
	}
	for i, l := range ls {
		if d, _ := l.DiffID(); d != cf.RootFS.DiffIDs[i] {
			t.Errorf("layer %d diffID %s want %s", i, d, cf.RootFS.DiffIDs[i])
		}
		if mt, _ := l.MediaType(); mt != types.DockerLayer {
			t.Errorf("layer %d media type %s", i, mt)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, tars[i]) {
			t.Errorf("layer %d does not decompress to the archive's tar", i)
		}
	}

	// Assemble on it and push; the registry holds a consistent image.
	reg := testkit.NewRegistry(t)
	a := mustAssemble(t, Spec{Base: b, Additions: []Addition{addition(t, "app", "app/x", "1")},
		Config: Config{Env: []EnvVar{{Name: "PATH", Value: "/app:$PATH"}}}})
	m := mustManifest(t, a.Image)
	if m.MediaType != types.DockerManifestSchema2 || len(m.Annotations) != 0 {
		t.Fatalf("manifest %s annotations %v", m.MediaType, m.Annotations)
	}
	if _, err := registry.Push(context.Background(), a.Image, reg.Host+"/team/app:1", nil, regOptions()); err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(reg.Host + "/team/app:1")
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	pls, _ := pulled.Layers()
	for i, l := range pls[:3] {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if testkit.Hash(got) != cf.RootFS.DiffIDs[i] {
			t.Errorf("pushed layer %d DiffID mismatch", i)
		}
	}
	if env := mustConfig(t, pulled).Config.Env; fmt.Sprint(env) != "[PATH=/app:/usr/bin]" {
		t.Errorf("env %v", env)
	}
	assertNoTemps(t, store)
}

// ociLayout writes a two-platform OCI image layout (each image with one
// gzip layer and one uncompressed layer), tars it and xz-compresses it.
func ociLayout(t *testing.T) ([]byte, v1.Image) {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	var arm v1.Image
	for _, arch := range []string{"amd64", "arm64"} {
		raw := testkit.Files(t, "etc/"+arch, arch)
		gz := testkit.Gzip(t, testkit.Files(t, "bin/"+arch, strings.Repeat(arch, 100)))
		gzl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(gz)), nil }, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		img, err = mutate.Append(img, mutate.Addendum{Layer: gzl}, mutate.Addendum{Layer: static.NewLayer(raw, types.OCIUncompressedLayer)})
		if err != nil {
			t.Fatal(err)
		}
		cf := mustConfig(t, img)
		cf.OS, cf.Architecture = "linux", arch
		img, _ = mutate.ConfigFile(img, cf)
		if err := p.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: arch})); err != nil {
			t.Fatal(err)
		}
		arm = img
	}
	var entries []tarEntry
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		entries = append(entries, tarEntry{name: "./" + filepath.ToSlash(rel), data: b})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var xzBuf bytes.Buffer
	xw, err := xz.NewWriter(&xzBuf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := xw.Write(writeTar(t, entries)); err != nil {
		t.Fatal(err)
	}
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	return xzBuf.Bytes(), arm
}

func TestFromArchiveXzOCILayout(t *testing.T) {
	archive, want := ociLayout(t)
	store := newStore(t)
	ctx := context.Background()
	b, err := FromArchive(ctx, bytes.NewReader(archive), store, v1.Platform{OS: "linux", Architecture: "arm64"}, "archive url https://x/oci.tar.xz", ArchiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if isDocker(t, b) || b.Platform.Architecture != "arm64" {
		t.Fatalf("base %+v", b)
	}
	wantCfg := mustConfig(t, want)
	m := mustManifest(t, b.Image)
	wm := mustManifest(t, want)
	if m.Layers[0].Digest != wm.Layers[0].Digest || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("the gzip layer must be used as it is: %+v", m.Layers[0])
	}
	if m.Layers[1].MediaType != types.OCILayer || m.Layers[1].Digest == wm.Layers[1].Digest {
		t.Errorf("the uncompressed layer must be gzipped: %+v", m.Layers[1])
	}
	ls, _ := b.Image.Layers()
	for i, l := range ls {
		if d, _ := l.DiffID(); d != wantCfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %d DiffID %s, want %s", i, d, wantCfg.RootFS.DiffIDs[i])
		}
	}
	a := mustAssemble(t, Spec{Base: b})
	if len(a.Notes) != 0 {
		t.Errorf("notes %v", a.Notes)
	}
	if m := mustManifest(t, a.Image); m.Annotations[AnnotationBaseName] != "" {
		t.Errorf("an archive base is not a reference: annotations %v", m.Annotations)
	}

	_, err = FromArchive(ctx, bytes.NewReader(archive), store, v1.Platform{OS: "linux", Architecture: "s390x"}, "archive x", ArchiveOptions{})
	if failure.ReasonOf(err) != failure.PlatformNotFound || !strings.Contains(err.Error(), "has no linux/s390x image; it has: linux/amd64, linux/arm64") {
		t.Fatalf("missing platform: %v", err)
	}
	assertNoTemps(t, store)
}

func TestFromArchiveErrors(t *testing.T) {
	good, _, _ := dockerSave(t)
	blob := []byte(`{"not":"a config"}`)
	wrongName := writeTar(t, []tarEntry{{name: "blobs/sha256/" + strings.Repeat("a", 64), data: blob}})
	tests := []struct {
		name   string
		data   []byte
		reason failure.Reason
		want   string
	}{
		{"not a tar", []byte("<html>nope</html>"), failure.InvalidArchive, "not a tar archive"},
		{"empty", nil, failure.InvalidArchive, "empty input"},
		{"truncated gzip", testkit.Gzip(t, good)[:200], failure.InvalidArchive, "gzip"},
		{"no manifest", writeTar(t, []tarEntry{{name: "hello", data: []byte("x")}}), failure.InvalidArchive, "neither index.json (OCI image layout) nor manifest.json"},
		{"blob digest lies", wrongName, failure.InvalidArchive, "member blobs/sha256/aaaaaaaa"},
		{"missing layer", writeTar(t, []tarEntry{{name: "c.json", data: []byte(`{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("b", 64) + `"]}}`)},
			{name: "manifest.json", data: []byte(`[{"Config":"c.json","Layers":["x/layer.tar"]}]`)}}), failure.InvalidArchive, "member x/layer.tar is missing"},
		{"diff id mismatch", writeTar(t, []tarEntry{{name: "x/layer.tar", data: testkit.Files(t, "a", "b")},
			{name: "c.json", data: []byte(`{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("b", 64) + `"]}}`)},
			{name: "manifest.json", data: []byte(`[{"Config":"c.json","Layers":["x/layer.tar"]}]`)}}), failure.InvalidArchive, "layer 1 (x/layer.tar): the config's diff_id is sha256:bbbb"},
		{"bad manifest.json", writeTar(t, []tarEntry{{name: "manifest.json", data: []byte(`{`)}}), failure.InvalidArchive, "member manifest.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newStore(t)
			_, err := FromArchive(context.Background(), bytes.NewReader(tt.data), store, DefaultPlatform, "archive test", ArchiveOptions{})
			if failure.ReasonOf(err) != tt.reason || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "archive test") {
				t.Fatalf("err = %v\nwant %s containing %q", err, tt.reason, tt.want)
			}
			assertNoTemps(t, store)
		})
	}
}

func TestFromArchiveCancelled(t *testing.T) {
	good, _, _ := dockerSave(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	store := newStore(t)
	_, err := FromArchive(ctx, bytes.NewReader(good), store, DefaultPlatform, "archive x", ArchiveOptions{})
	if failure.IsPermanent(err) || err == nil {
		t.Fatalf("cancelled load: %v", err)
	}
	assertNoTemps(t, store)
}

func assertNoTemps(t *testing.T, s *blobstore.Store) {
	t.Helper()
	tmps, err := s.TempFiles()
	if err != nil || len(tmps) != 0 {
		t.Fatalf("temp files left: %v %v", tmps, err)
	}
}

func TestFromArchiveSingleImagePlatformMustMatch(t *testing.T) {
	archive, _, _ := dockerSave(t) // one linux/amd64 image
	tests := []struct {
		platform string
		err      string
	}{
		{"", ""},
		{"linux/amd64", ""},
		{"windows/amd64", "base archive x: base.platform windows/amd64 does not match the base image's platform linux/amd64"},
		{"linux/arm64", "base archive x: base.platform linux/arm64 does not match the base image's platform linux/amd64"},
	}
	for _, tt := range tests {
		p, _ := ParsePlatform(tt.platform)
		store := newStore(t)
		b, err := FromArchive(context.Background(), bytes.NewReader(archive), store, p, "archive x", ArchiveOptions{})
		if tt.err == "" {
			if err != nil {
				t.Errorf("platform %q: %v", tt.platform, err)
			} else {
				b.Release()
			}
			continue
		}
		if failure.ReasonOf(err) != failure.PlatformNotFound || err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("platform %q: err = %v\nwant PlatformNotFound containing %q", tt.platform, err, tt.err)
		}
		assertNoTemps(t, store)
	}
}
