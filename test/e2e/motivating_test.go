//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// The five reports kiln exists for, end to end through the API server.

// appLayer is a small app layer used by several scenarios.
func appLayer(t testing.TB) []byte {
	return testkit.Tar(t,
		testkit.Dir("app/"),
		testkit.Dir("app/bin/"),
		testkit.File("app/bin/server", "#!/bin/sh\necho serving\n").WithMode(0o755),
		testkit.File("app/config.yaml", "listen: :8080\n"),
		testkit.Dir("app/data/").WithMode(0o700),
		testkit.Symlink("app/current", "/app/bin"),
	)
}

// Report 4: from scratch, a layer and env need one tool and one manifest
// push (crane needs append, then mutate: two pushes).
func TestScratchLayerEnvOneManifestPush(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	app := appLayer(t)
	url := s.serveFile(t, "scratch/app.tar.gz", testkit.Gzip(t, app))
	ib := imageBuild(ns, "app", "scratch/app", urlLayer("app", url))
	ib.Spec.Config = &kilnv1.ImageConfig{
		Env:        []kilnv1.EnvVar{{Name: "PATH", Value: "/app/bin:/usr/bin:/bin"}, {Name: "APP_ENV", Value: "production"}},
		Entrypoint: []string{"/app/bin/server"},
		Cmd:        []string{"--port=8080"},
		WorkingDir: "/app",
		User:       "65532:65532",
		Labels:     map[string]string{"team": "a", "org.opencontainers.image.title": "app"},
	}
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "app", 2*time.Minute)

	reqs := registryRequests(t, "scratch/app")
	if n := manifestPuts(reqs); n != 1 {
		t.Errorf("manifest PUTs to scratch/app: %d, want exactly 1 (one pass: no append-then-mutate); requests: %v", n, writes(reqs))
	}
	checkImage(t, digestRef(t, ib), wantImage{
		tree:       expectedTree(t, app),
		env:        []string{"PATH=/app/bin:/usr/bin:/bin", "APP_ENV=production"},
		entrypoint: []string{"/app/bin/server"}, cmd: []string{"--port=8080"},
		workingDir: "/app", user: "65532:65532",
		labels: map[string]string{"team": "a", "org.opencontainers.image.title": "app"},
		os:     "linux", arch: "amd64",
		diffIDs: []string{testkit.Digest(app)},
	})
}

// Report 5: an xz rootfs. podman import and crane append record the hash of
// the xz bytes as DiffID; umoci then refuses the image ("diffid mismatch").
func TestXzRootfsDiffID(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	rootfs, err := sandbox.RootfsTar()
	if err != nil {
		t.Fatal(err)
	}
	xzBytes := testkit.Xz(t, rootfs)
	url := s.serveFile(t, "xz/rootfs.tar.xz", xzBytes)
	ib := imageBuild(ns, "rootfs", "xz/rootfs", kilnv1.Layer{
		Name: "rootfs", Source: &kilnv1.Source{URL: url},
		Digest: testkit.Digest(xzBytes), DiffID: testkit.Digest(rootfs),
	})
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "rootfs", 2*time.Minute)

	l := ib.Status.Layers
	if len(l) != 1 || l[0].DiffID != testkit.Digest(rootfs) || l[0].SourceCompression != "xz" || l[0].SourceDigest != testkit.Digest(xzBytes) {
		t.Errorf("status.layers = %s; want one layer with diffID %s (sha256 of the uncompressed tar, not of the xz bytes %s), sourceCompression xz",
			mustJSON(l), testkit.Digest(rootfs), testkit.Digest(xzBytes))
	}
	checkImage(t, digestRef(t, ib), wantImage{
		tree: expectedTree(t, rootfs), os: "linux", arch: "amd64",
		diffIDs: []string{testkit.Digest(rootfs)},
	})
}

// Report 3: `docker save | gzip` as the base (crane push: "invalid tar header").
func TestGzipDockerSaveBase(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	baseLayer := testkit.Tar(t,
		testkit.Dir("etc/"),
		testkit.File("etc/os-release", "ID=e2e\n"),
		testkit.Dir("usr/"), testkit.Dir("usr/bin/"),
		testkit.File("usr/bin/tool", "tool v1\n").WithMode(0o755),
		testkit.Symlink("usr/bin/tool-link", "tool"),
	)
	baseLayer2 := testkit.Tar(t,
		testkit.Dir("usr/"), testkit.Dir("usr/bin/"),
		testkit.File("usr/bin/tool", "tool v2\n").WithMode(0o755),
		testkit.File("usr/bin/.wh.tool-link", ""),
	)
	archive := testkit.Gzip(t, dockerSaveArchive(t, "e2e/base:1", map[string]any{
		"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
		"config": map[string]any{"Env": []string{"PATH=/usr/bin:/bin", "BASE=1"}, "Cmd": []string{"/usr/bin/tool"}},
	}, baseLayer, baseLayer2))
	archiveURL := s.serveFile(t, "docker-save/base.tar.gz", archive)
	app := appLayer(t)
	appURL := s.serveFile(t, "docker-save/app.tar.gz", testkit.Gzip(t, app))

	ib := imageBuild(ns, "on-archive", "docker-save/app", urlLayer("app", appURL))
	ib.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: archiveURL}, Digest: testkit.Digest(archive)}}
	ib.Spec.Config = &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "PATH", Value: "/app/bin:$PATH"}}}
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "on-archive", 2*time.Minute)

	checkImage(t, digestRef(t, ib), wantImage{
		tree: expectedTree(t, baseLayer, baseLayer2, app),
		env:  []string{"PATH=/app/bin:/usr/bin:/bin", "BASE=1"},
		cmd:  []string{"/usr/bin/tool"},
		os:   "linux", arch: "amd64",
		diffIDs: []string{testkit.Digest(baseLayer), testkit.Digest(baseLayer2), testkit.Digest(app)},
	})
}

// Report 1: a `tar -C dir .` layer on a Windows base. crane append turned the
// "./" root entry into a second "Files": "duplicate file path: Files".
func TestWindowsTarCDirLayer(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	ref := s.reg.Addr() + "/windows/nanoserver:ltsc2022"
	pushWindowsBase(t, ref)
	layer, err := sandbox.WindowsAppTar()
	if err != nil {
		t.Fatal(err)
	}
	if paths := tarPaths(t, layer); paths[0] != "./" {
		t.Fatalf("fixture is not `tar -C dir .` shaped: first entry %q", paths[0])
	}
	url := s.serveFile(t, "windows/app.tar.gz", testkit.Gzip(t, layer))
	ib := imageBuild(ns, "win", "windows/app", urlLayer("app", url))
	ib.Spec.Base = &kilnv1.Base{Image: ref, Platform: "windows/amd64"}
	ib.Spec.Config = &kilnv1.ImageConfig{Entrypoint: []string{`C:\app\server.exe`}}
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "win", 2*time.Minute)

	// umoci refuses Windows images ("unsupported OS: windows"); check the layers with
	// independent decoders: DiffIDs, no duplicate path, the Windows shape.
	p := checkImage(t, digestRef(t, ib), wantImage{
		entrypoint: []string{`C:\app\server.exe`},
		user:       "ContainerUser",
		os:         "windows", arch: "amd64", osVersion: sandbox.WindowsBaseOSVersion,
	})
	if n := len(p.manifest.Layers); n != 2 {
		t.Fatalf("windows image has %d layers, want base + app = 2", n)
	}
	for i := range p.manifest.Layers {
		paths := tarPaths(t, p.layerTar(t, i))
		seen := map[string]int{}
		for j, name := range paths {
			clean := cleanName(name)
			if prev, dup := seen[clean]; dup {
				t.Errorf("layer %d: duplicate path %q (entries %d and %d)", i, clean, prev, j)
			}
			seen[clean] = j
			if top, _, _ := strings.Cut(clean, "/"); top != "Files" && top != "Hives" {
				t.Errorf("layer %d: entry %q is outside Files/ and Hives/", i, name)
			}
		}
	}
	// The app layer holds exactly the input's entries under Files/, plus
	// the Files and Hives roots once each.
	got := tree{}
	got.apply(t, p.layerTar(t, 1))
	want := tree{}
	for path, n := range expectedTree(t, layer) {
		want["Files/"+path] = n
	}
	for _, root := range []string{"Files", "Hives"} {
		if n, ok := got[root]; !ok || n.Type != "dir" {
			t.Errorf("app layer: %s is %v, want a directory", root, n)
		}
		want[root] = got[root]
	}
	if d := diffTrees(want, got, 30); len(d) > 0 {
		t.Errorf("windows app layer differs from the input shaped under Files/:\n  %s", strings.Join(d, "\n  "))
	}
}

func pushWindowsBase(t testing.TB, ref string) {
	t.Helper()
	idx, err := sandbox.WindowsBase()
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(context.Background())); err != nil {
		t.Fatalf("pushing the windows base: %v", err)
	}
}

// Report 2: identical (empty) layers written concurrently collided on rename.
// Eight ImageBuilds at once, each with three identical empty layers.
func TestEightBuildsIdenticalEmptyLayers(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	empty := testkit.Tar(t) // the 1024 zero bytes of an empty tar
	url := s.serveFile(t, "empty/empty.tar", empty)
	names := make([]string, 8)
	for i := range names {
		names[i] = fmt.Sprintf("empty-%d", i)
		ib := imageBuild(ns, names[i], "empty/img-"+fmt.Sprint(i),
			urlLayer("a", url), urlLayer("b", url), urlLayer("c", url))
		// A distinct env per build: eight different images sharing one blob.
		ib.Spec.Config = &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "N", Value: fmt.Sprint(i)}}}
		kube.Create(t, s.k8s, ib)
	}
	var mu sync.Mutex
	layerDigests := map[string]bool{}
	refs := make([]string, len(names))
	for i, n := range names {
		ib := waitReady(t, ns, n, 3*time.Minute)
		refs[i] = digestRef(t, ib)
		for _, l := range ib.Status.Layers {
			mu.Lock()
			layerDigests[l.Digest] = true
			mu.Unlock()
			if l.DiffID != testkit.Digest(empty) {
				t.Errorf("%s layer %s: diffID %s, want %s", n, l.Name, l.DiffID, testkit.Digest(empty))
			}
		}
	}
	if len(layerDigests) != 1 {
		t.Errorf("eight builds of the same empty layer produced %d different blobs: %v", len(layerDigests), layerDigests)
	}
	leftovers, err := tempLeftovers(s.mgr.cfg.cacheDir)
	if err != nil || len(leftovers) > 0 {
		t.Errorf("cache temp leftovers after concurrent builds: %v %v", leftovers, err)
	}
	for i, ref := range refs {
		checkImage(t, ref, wantImage{
			tree: tree{}, env: []string{"N=" + fmt.Sprint(i)}, os: "linux", arch: "amd64",
			diffIDs: []string{testkit.Digest(empty), testkit.Digest(empty), testkit.Digest(empty)},
		})
	}
}
