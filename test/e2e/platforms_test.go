//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/testkit"
	"github.com/kiln-build/kiln/internal/testkit/kube"
)

// One ImageBuild, three platforms: linux/amd64 and linux/arm64 from scratch
// with a rootfs variant each, a shared layer, an amd64-only debug layer,
// and windows/amd64 on its own (index) base. Independent clients read the
// result: skopeo inspect --raw shows the index, skopeo copy --all copies
// every child, each Linux child picked with skopeo's platform overrides
// unpacks with umoci to the exact tree, and the Windows child is checked
// like the Windows scenario.
func TestMultiPlatformIndex(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	winRef := s.reg.Addr() + "/windows/nanoserver:ltsc2022-multi"
	pushWindowsBase(t, winRef)
	rootfs := map[string][]byte{}
	for _, arch := range []string{"amd64", "arm64"} {
		rootfs[arch] = testkit.Tar(t, testkit.Dir("bin/"), testkit.File("bin/arch", arch+"\n").WithMode(0o755), testkit.Dir("etc/"), testkit.File("etc/os-release", "ID=kiln\n"))
	}
	shared := testkit.Tar(t, testkit.Dir("etc/"), testkit.Dir("etc/ssl/"), testkit.File("etc/ssl/ca.pem", "CA\n"))
	debug := testkit.Tar(t, testkit.Dir("usr/"), testkit.Dir("usr/bin/"), testkit.File("usr/bin/debug", "dbg").WithMode(0o755))
	winApp, err := sandbox.WindowsAppTar()
	if err != nil {
		t.Fatal(err)
	}
	ib := imageBuild(ns, "multi", "multi/base")
	ib.Spec.Base = nil // scratch for the Linux platforms
	ib.Spec.Platforms = []kilnv1.PlatformBuild{
		{Platform: "linux/amd64"}, {Platform: "linux/arm64"},
		{Platform: "windows/amd64:10.0.20348", Base: &kilnv1.Base{Image: winRef},
			Config: &kilnv1.ImageConfig{Entrypoint: []string{`C:\app\server.exe`}}},
	}
	ib.Spec.Config = &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "APP", Value: "1"}}, Entrypoint: []string{"/bin/arch"}}
	ib.Spec.Layers = []kilnv1.Layer{
		{Name: "rootfs", Variants: []kilnv1.LayerVariant{
			{Platform: "linux/amd64", Source: kilnv1.Source{URL: s.serveFile(t, "multi/rootfs-amd64.tar.gz", testkit.Gzip(t, rootfs["amd64"]))}},
			{Platform: "linux/arm64", Source: kilnv1.Source{URL: s.serveFile(t, "multi/rootfs-arm64.tar.xz", testkit.Xz(t, rootfs["arm64"]))}},
			{Platform: "windows/amd64", Source: kilnv1.Source{URL: s.serveFile(t, "multi/app-windows.tar.gz", testkit.Gzip(t, winApp))}},
		}},
		{Name: "shared", Source: &kilnv1.Source{URL: s.serveFile(t, "multi/shared.tar", shared)}},
		{Name: "debug", Platforms: []string{"linux/amd64"}, Source: &kilnv1.Source{URL: s.serveFile(t, "multi/debug.tar", debug)}},
	}
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "multi", 3*time.Minute)
	if len(ib.Status.Manifests) != 3 || ib.Status.MediaType != string(types.OCIImageIndex) {
		t.Fatalf("status: %s", kube.Describe(ib))
	}

	// The index as a registry client sees it.
	var idx v1.IndexManifest
	if err := json.Unmarshal(skopeoInspect(t, digestRef(t, ib), "--raw"), &idx); err != nil {
		t.Fatal(err)
	}
	wantPlat := []string{"linux/amd64", "linux/arm64", "windows/amd64:" + sandbox.WindowsBaseOSVersion}
	if len(idx.Manifests) != 3 {
		t.Fatalf("index has %d manifests, want 3", len(idx.Manifests))
	}
	for i, m := range idx.Manifests {
		if m.Platform == nil || m.Platform.String() != wantPlat[i] || m.Digest.String() != ib.Status.Manifests[i].Digest {
			t.Errorf("index entry %d = %+v, want platform %s digest %s", i, m, wantPlat[i], ib.Status.Manifests[i].Digest)
		}
	}

	// skopeo copy --all: every child and blob lands in the layout.
	layout := filepath.Join(t.TempDir(), "all")
	run(t, 5*time.Minute, "skopeo", "--insecure-policy", "copy", "--all", "--quiet", "--src-tls-verify=false",
		"docker://"+digestRef(t, ib), "oci:"+layout+":all")
	for _, m := range ib.Status.Manifests {
		d, _ := v1.NewHash(m.Digest)
		raw, err := os.ReadFile(blobPath(layout, d))
		if err != nil {
			t.Fatalf("skopeo copy --all lacks %s child %s: %v", m.Platform, m.Digest, err)
		}
		var man v1.Manifest
		if err := json.Unmarshal(raw, &man); err != nil {
			t.Fatal(err)
		}
		for _, l := range append(man.Layers, man.Config) {
			if _, err := os.Stat(blobPath(layout, l.Digest)); err != nil {
				t.Errorf("skopeo copy --all lacks blob %s of %s", l.Digest, m.Platform)
			}
		}
	}

	// Each Linux child, picked the way a node of that architecture would.
	for _, tc := range []struct {
		arch   string
		layers [][]byte
	}{
		{"amd64", [][]byte{rootfs["amd64"], shared, debug}},
		{"arm64", [][]byte{rootfs["arm64"], shared}},
	} {
		want := wantImage{
			tree: expectedTree(t, tc.layers...), env: []string{"APP=1"}, entrypoint: []string{"/bin/arch"},
			os: "linux", arch: tc.arch, pick: []string{"--override-os", "linux", "--override-arch", tc.arch},
		}
		for _, l := range tc.layers {
			want.diffIDs = append(want.diffIDs, testkit.Digest(l))
		}
		checkImage(t, digestRef(t, ib), want)
	}

	// The Windows child: its own base, the Files/ shape, its config.
	p := checkImage(t, digestRef(t, ib), wantImage{
		entrypoint: []string{`C:\app\server.exe`}, env: []string{"APP=1"}, user: "ContainerUser",
		os: "windows", arch: "amd64", osVersion: sandbox.WindowsBaseOSVersion,
		pick: []string{"--override-os", "windows", "--override-arch", "amd64"},
	})
	if n := len(p.manifest.Layers); n != 3 {
		t.Fatalf("windows image has %d layers, want base + rootfs variant + shared = 3", n)
	}
	for i := 1; i < 3; i++ {
		for _, name := range tarPaths(t, p.layerTar(t, i)) {
			if top, _, _ := strings.Cut(cleanName(name), "/"); top != "Files" && top != "Hives" {
				t.Errorf("windows layer %d: entry %q is outside Files/ and Hives/", i, name)
			}
		}
	}
	if bytes.Equal(p.layerTar(t, 2), shared) {
		t.Errorf("the shared layer was not shaped for Windows")
	}
}
