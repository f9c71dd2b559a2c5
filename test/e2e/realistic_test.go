//go:build e2e

package e2e

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// busyboxRootfs is a root filesystem around Debian's busybox-static: the
// real binary, one symlink per applet (as `busybox --install -s` makes them,
// from the binary's own --list-full), and the usual /etc files.
func busyboxRootfs(t testing.TB) []byte {
	t.Helper()
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatalf("reading %s (Debian busybox-static; run hack/e2e-deps.sh): %v", busyboxPath, err)
	}
	out, err := exec.Command(busyboxPath, "--list-full").Output()
	if err != nil {
		t.Fatalf("%s --list-full: %v", busyboxPath, err)
	}
	es := []testkit.Entry{
		testkit.Dir("bin/"),
		testkit.File("bin/busybox", string(bin)).WithMode(0o755),
		testkit.Dir("etc/"),
		testkit.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
		testkit.File("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
		testkit.File("etc/hostname", "busybox\n"),
		testkit.Dir("root/").WithMode(0o700),
		testkit.Dir("sbin/"),
		testkit.Dir("tmp/").WithMode(0o1777),
		testkit.Dir("usr/"),
		testkit.Dir("usr/bin/"),
		testkit.Dir("usr/sbin/"),
		testkit.Dir("var/"),
		testkit.Dir("var/run/"),
	}
	applets := strings.Fields(string(out))
	if len(applets) < 100 {
		t.Fatalf("%s --list-full lists %d applets; not the busybox-static binary?", busyboxPath, len(applets))
	}
	for _, a := range applets {
		if a == "bin/busybox" {
			continue
		}
		es = append(es, testkit.Symlink(a, "/bin/busybox"))
	}
	return testkit.Tar(t, es...)
}

// A real busybox rootfs (zstd input) plus an app layer (bzip2 input), with a
// full config: the image a person would run.
func TestBusyboxRootfsAndApp(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	rootfs := busyboxRootfs(t)
	app := appLayer(t)
	rootfsURL := s.serveFile(t, "busybox/rootfs.tar.zst", testkit.Zstd(t, rootfs))
	appURL := s.serveFile(t, "busybox/app.tar.bz2", testkit.Bzip2(t, app))
	ib := imageBuild(ns, "busybox", "busybox/app", urlLayer("rootfs", rootfsURL), urlLayer("app", appURL))
	ib.Spec.Config = &kilnv1.ImageConfig{
		Env:        []kilnv1.EnvVar{{Name: "PATH", Value: "/app/bin:/bin:/usr/bin:/sbin:/usr/sbin"}, {Name: "HOME", Value: "/root"}},
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"exec /app/bin/server"},
		WorkingDir: "/app",
		User:       "0:0",
		Labels:     map[string]string{"org.opencontainers.image.title": "busybox-app"},
	}
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "busybox", 2*time.Minute)
	checkImage(t, digestRef(t, ib), wantImage{
		tree:       expectedTree(t, rootfs, app),
		env:        []string{"PATH=/app/bin:/bin:/usr/bin:/sbin:/usr/sbin", "HOME=/root"},
		entrypoint: []string{"/bin/sh", "-c"}, cmd: []string{"exec /app/bin/server"},
		workingDir: "/app", user: "0:0",
		labels: map[string]string{"org.opencontainers.image.title": "busybox-app"},
		os:     "linux", arch: "amd64",
		diffIDs: []string{testkit.Digest(rootfs), testkit.Digest(app)},
	})
}

// Ten layers in every input compression, replacing, whiting out and
// opaquing each other's paths, pushed with zstd output (an OCI image).
func TestTenLayers(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	compress := []struct {
		ext string
		fn  func(testing.TB, []byte) []byte
	}{
		{"tar", func(_ testing.TB, b []byte) []byte { return b }},
		{"tar.gz", testkit.Gzip}, {"tar.xz", testkit.Xz}, {"tar.zst", testkit.Zstd}, {"tar.bz2", testkit.Bzip2},
	}
	var tars [][]byte
	var layers []kilnv1.Layer
	var diffIDs []string
	for i := 0; i < 10; i++ {
		es := []testkit.Entry{
			testkit.Dir("data/"),
			testkit.File(fmt.Sprintf("data/layer-%d", i), strings.Repeat(fmt.Sprintf("layer %d\n", i), 100+i)),
			testkit.File("data/shared", fmt.Sprintf("written by layer %d\n", i)),
			testkit.Dir("opt/"),
			testkit.Dir(fmt.Sprintf("opt/l%d/", i)).WithMode(0o750),
			testkit.File(fmt.Sprintf("opt/l%d/blob", i), string(noise(uint64(100+i), 64<<10))).WithMode(0o600),
		}
		switch i {
		case 4: // whiteout of a file from layer 1
			es = append(es, testkit.File("data/.wh.layer-1", ""))
		case 6: // opaque directory: opt/l2 loses everything from below
			es = append(es, testkit.Dir("opt/l2/").WithMode(0o750), testkit.File("opt/l2/.wh..wh..opq", ""), testkit.File("opt/l2/new", "after opaque\n"))
		case 8:
			es = append(es, testkit.Symlink("data/latest", fmt.Sprintf("layer-%d", i)), testkit.Hardlink("data/hard", "data/layer-8"))
		}
		tb := testkit.Tar(t, es...)
		tars = append(tars, tb)
		c := compress[i%len(compress)]
		url := s.serveFile(t, fmt.Sprintf("ten/layer-%d.%s", i, c.ext), c.fn(t, tb))
		layers = append(layers, urlLayer(fmt.Sprintf("l%d", i), url))
		diffIDs = append(diffIDs, testkit.Digest(tb))
	}
	// gzip output is unpacked by umoci; umoci 0.4 cannot read zstd layers
	// ("blob is not correct mediatype"), so the zstd image is checked with
	// klauspost's decoder: DiffIDs, then the layers applied in order.
	gz := imageBuild(ns, "ten-gzip", "ten/gzip", layers...)
	zs := imageBuild(ns, "ten-zstd", "ten/zstd", layers...)
	zs.Spec.Output = &kilnv1.Output{Compression: kilnv1.OutputZstd}
	kube.Create(t, s.k8s, gz, zs)
	want := expectedTree(t, tars...)

	gz = waitReady(t, ns, "ten-gzip", 2*time.Minute)
	checkImage(t, digestRef(t, gz), wantImage{tree: want, os: "linux", arch: "amd64", diffIDs: diffIDs})

	zs = waitReady(t, ns, "ten-zstd", 2*time.Minute)
	for _, l := range zs.Status.Layers {
		if l.MediaType != "application/vnd.oci.image.layer.v1.tar+zstd" {
			t.Errorf("layer %s: media type %s, want zstd output", l.Name, l.MediaType)
		}
	}
	p := checkImage(t, digestRef(t, zs), wantImage{os: "linux", arch: "amd64", diffIDs: diffIDs})
	if d := diffTrees(want, p.rootfs(t), 30); len(d) > 0 {
		t.Errorf("zstd image: layers applied in order differ from the expected tree:\n  %s", strings.Join(d, "\n  "))
	}
}

// bigLayerSize is the large-layer scenario's uncompressed size.
const bigLayerSize = 512 << 20

// writeBigLayer streams a tar of size bytes to path without holding it in
// memory: files of text-like data (compresses ~3x) and incompressible data,
// built from 1 MiB pools varied per chunk so no two chunks are equal. It
// returns the tree the layer unpacks to and the tar's sha256 (its DiffID).
func writeBigLayer(t testing.TB, path string, size int64, seed uint64) (tree, string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, sum), 1<<20)
	tw := tar.NewWriter(bw)
	text, rnd := pseudoText(seed, 1<<20), noise(seed+1, 1<<20)
	want := tree{"big": {Type: "dir", Mode: 0o755}}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "big/", Mode: 0o755, ModTime: testkit.Time}); err != nil {
		t.Fatal(err)
	}
	const fileSize = 64 << 20
	chunk := make([]byte, 1<<20)
	for i := 0; int64(i+1)*fileSize <= size-(1<<20); i++ {
		name := fmt.Sprintf("big/part-%02d.bin", i)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: fileSize, ModTime: testkit.Time}); err != nil {
			t.Fatal(err)
		}
		fh := sha256.New()
		pool := text
		if i%4 == 3 {
			pool = rnd
		}
		for c := 0; c < fileSize/len(chunk); c++ {
			// Rotate the pool and stamp the chunk number: every chunk differs.
			off := (c*7919 + i*104729) % len(pool)
			n := copy(chunk, pool[off:])
			copy(chunk[n:], pool[:off])
			copy(chunk, fmt.Sprintf("file %d chunk %d\n", i, c))
			if _, err := tw.Write(chunk); err != nil {
				t.Fatal(err)
			}
			fh.Write(chunk)
		}
		want["big/"+strings.TrimPrefix(name, "big/")] = node{Type: "file", Mode: 0o644, SHA256: hex.EncodeToString(fh.Sum(nil)), Size: fileSize}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return want, "sha256:" + hex.EncodeToString(sum.Sum(nil))
}

// One layer of at least 512 MiB, generated on the fly, served as a plain tar
// (kiln compresses it) and unpacked by umoci.
func TestLargeLayer512MiB(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	done := step(t, "generate 512 MiB layer")
	path := filepath.Join(s.filesDir, "big", "layer.tar")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	want, diffID := writeBigLayer(t, path, bigLayerSize+(1<<20), 42)
	defer os.Remove(path)
	done()
	if fi, err := os.Stat(path); err != nil || fi.Size() < bigLayerSize {
		t.Fatalf("generated layer is %v bytes (%v), want >= %d", fi.Size(), err, bigLayerSize)
	}
	ib := imageBuild(ns, "big", "big/layer", urlLayer("big", s.files.URL("big/layer.tar")))
	done = step(t, "build and push 512 MiB layer")
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "big", 8*time.Minute)
	done()
	l := ib.Status.Layers[0]
	t.Logf("512 MiB layer: uncompressed %d bytes, pushed %d bytes (%s), diffID %s", l.UncompressedSize, l.Size, l.MediaType, l.DiffID)
	checkImage(t, digestRef(t, ib), wantImage{tree: want, os: "linux", arch: "amd64", diffIDs: []string{diffID}})
}
