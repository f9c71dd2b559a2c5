//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// hostCABundle is the bundle the e2e host (Debian, see hack/e2e-deps.sh)
// has where hack/image looks first; passed explicitly so the expected
// rootfs is known.
const hostCABundle = "/etc/ssl/certs/ca-certificates.crt"

// TestManagerFromKilnImage builds kiln's own image the way `make image`
// does (hack/image: bin/kiln on scratch, built and pushed by bin/kiln),
// twice with empty caches to the same digest, copies it out with skopeo,
// unpacks it with umoci, checks the config and the rootfs, and runs the
// manager from the unpacked rootfs against the suite's control plane: it
// must build an image.
func TestManagerFromKilnImage(t *testing.T) {
	version := strings.Fields(string(run(t, time.Minute, filepath.Join(s.root, "bin", "kiln"), "version")))[1]
	ref := buildKilnImage(t, version)

	rootfs, cfg := unpackKilnImage(t, ref, version)
	if got := string(run(t, time.Minute, filepath.Join(rootfs, "kiln"), "version")); !strings.HasPrefix(got, "kiln "+version+" ") {
		t.Fatalf("%s/kiln version printed %q, want kiln %s", rootfs, got, version)
	}

	done := step(t, "manager from the unpacked image")
	main := s.mgr.cfg
	defer func() {
		if err := s.restartManager(context.Background(), main, false); err != nil {
			t.Errorf("restarting the main manager: %v", err)
		}
	}()
	fromImage := managerConfig{cacheDir: filepath.Join(s.work, "cache-from-image"), binary: filepath.Join(rootfs, cfg.Entrypoint[0])}
	if err := s.restartManager(context.Background(), fromImage, false); err != nil {
		t.Fatal(err)
	}
	ns := kube.Namespace(t, s.k8s)
	app := testkit.Tar(t, testkit.Dir("app/"), testkit.File("app/hello", "built by kiln from kiln's image\n"))
	ib := imageBuild(ns, "from-image", "from-image/app", urlLayer("app", s.serveFile(t, "from-image/app.tar.gz", testkit.Gzip(t, app))))
	kube.Create(t, s.k8s, ib)
	built := waitReady(t, ns, ib.Name, time.Minute)
	done()
	checkImage(t, digestRef(t, built), wantImage{tree: expectedTree(t, app), os: "linux", arch: "amd64"})
}

// buildKilnImage runs hack/image twice, each time with an empty cache and
// a different tag: both runs must push the same digest. It returns the
// pushed repository@digest.
func buildKilnImage(t *testing.T, version string) string {
	t.Helper()
	defer step(t, "hack/image twice (empty caches)")()
	tool := filepath.Join(s.work, "hack-image")
	goBuild := exec.Command("go", "build", "-o", tool, "./hack/image")
	goBuild.Dir = s.root
	if out, err := goBuild.CombinedOutput(); err != nil {
		t.Fatalf("go build ./hack/image: %v\n%s", err, out)
	}
	var refs []string
	for _, name := range []string{"a", "b"} {
		img := s.reg.Addr() + "/kiln/manager:" + name
		out := filepath.Join(s.work, "image-"+name+".ref")
		cmd := exec.Command(tool, "-kiln", filepath.Join(s.root, "bin", "kiln"), "-img", img, "-version", version,
			"-ca", hostCABundle, "-out", out, "--", "--cache-dir", filepath.Join(s.work, "cache-image-"+name), "--progress=false")
		cmd.Dir = s.root
		stdout, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("hack/image run %s: %v\n%s", name, err, stdout)
		}
		t.Logf("hack/image run %s: %s", name, strings.TrimSpace(string(stdout)))
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(b))
		if len(f) != 2 || f[0] != img || !strings.HasPrefix(f[1], s.reg.Addr()+"/kiln/manager@sha256:") {
			t.Fatalf("%s holds %q, want %q then the pushed repository@digest", out, b, img)
		}
		refs = append(refs, f[1])
	}
	if refs[0] != refs[1] {
		t.Fatalf("the same commit and binary built twice: %s and %s", refs[0], refs[1])
	}
	return refs[0]
}

// unpackKilnImage copies ref out with skopeo, checks its config, unpacks it
// with umoci (which verifies every DiffID) and checks the rootfs: the CA
// bundle, /tmp and /kiln, byte for byte the host's files. It returns the
// unpacked rootfs and the config.
func unpackKilnImage(t *testing.T, ref, version string) (string, v1.Config) {
	t.Helper()
	defer step(t, "skopeo copy + umoci unpack of kiln's image")()
	dir := t.TempDir()
	layout := filepath.Join(dir, "oci")
	run(t, 2*time.Minute, "skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":e2e")
	p := readLayout(t, layout, "e2e")
	revision := strings.TrimSpace(string(run(t, time.Minute, "git", "-C", s.root, "rev-parse", "HEAD")))
	created := strings.TrimSpace(string(run(t, time.Minute, "git", "-C", s.root, "show", "-s", "--format=%cI", "HEAD")))
	createdAt, err := time.Parse(time.RFC3339, created)
	if err != nil {
		t.Fatal(err)
	}
	want := wantImage{
		entrypoint: []string{"/kiln"}, cmd: []string{"manager"}, user: "65532:65532",
		os: "linux", arch: runtime.GOARCH,
		labels: map[string]string{
			"org.opencontainers.image.title":       "kiln",
			"org.opencontainers.image.description": "Builds OCI images from ImageBuild resources, without a container runtime.",
			"org.opencontainers.image.licenses":    "Apache-2.0",
			"org.opencontainers.image.source":      "https://github.com/kiln-build/kiln",
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.revision":    revision,
			"org.opencontainers.image.created":     createdAt.UTC().Format(time.RFC3339),
		},
	}
	checkConfig(t, ref, p.config, want)
	if !p.config.Created.Time.Equal(createdAt) {
		t.Errorf("%s: created %s, want the commit time %s", ref, p.config.Created.Time, createdAt)
	}
	if got := p.manifest.Annotations["org.opencontainers.image.revision"]; got != revision {
		t.Errorf("%s: manifest annotation revision = %q, want %q", ref, got, revision)
	}
	bundle := filepath.Join(dir, "bundle")
	run(t, 2*time.Minute, "umoci", "unpack", "--rootless", "--image", layout+":e2e", bundle)
	rootfs := filepath.Join(bundle, "rootfs")
	wantTree := tree{
		"etc":                               {Type: "dir", Mode: 0o755},
		"etc/ssl":                           {Type: "dir", Mode: 0o755},
		"etc/ssl/certs":                     {Type: "dir", Mode: 0o755},
		"etc/ssl/certs/ca-certificates.crt": fileNode(t, hostCABundle, 0o644),
		"tmp":                               {Type: "dir", Mode: 0o777 | os.ModeSticky},
		"kiln":                              fileNode(t, filepath.Join(s.root, "bin", "kiln"), 0o755),
	}
	if d := diffTrees(wantTree, readTree(t, rootfs), 30); len(d) > 0 {
		t.Fatalf("%s: unpacked rootfs differs:\n  %s", ref, strings.Join(d, "\n  "))
	}
	checkRuntimeSpec(t, ref, filepath.Join(bundle, "config.json"), want)
	return rootfs, p.config.Config
}

// fileNode is the node a host file must unpack to, with the image's mode.
func fileNode(t *testing.T, path string, mode os.FileMode) node {
	t.Helper()
	sum, err := fileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return node{Type: "file", Mode: mode, SHA256: sum, Size: fi.Size()}
}
