//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// A GitRepository becomes an image: the Flux CRDs are installed into the
// running control plane (the manager started without them), the
// repository's artifact is a tar.gz with source-controller's modes (files
// 0600, executables 0700, directories 0750) on the suite's file server,
// and the image umoci unpacks holds path under targetDir readable by
// anyone, root-owned, with the source and revision annotations. `kiln plan
// --source` on a checkout of the same files computes the same layer.
func TestGitRepositoryLayer(t *testing.T) {
	ctx := context.Background()
	ns := kube.Namespace(t, s.k8s)
	if _, err := envtest.InstallCRDs(s.cp.Config(), envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(s.root, "controllers", "testdata", "fluxcrds")},
	}); err != nil {
		t.Fatal(err)
	}
	artifact := testkit.Gzip(t, testkit.Tar(t,
		testkit.Dir("deploy/").WithMode(0o750),
		testkit.File("deploy/app.yaml", "replicas: 2\n").WithMode(0o600),
		testkit.Dir("deploy/bin/").WithMode(0o750),
		testkit.File("deploy/bin/run", "#!/bin/sh\necho run\n").WithMode(0o700),
		testkit.Symlink("deploy/current.yaml", "app.yaml"),
		testkit.File("README.md", "outside path\n").WithMode(0o600),
	))
	url := s.serveFile(t, "gitrepository/platform/abc.tar.gz", artifact)

	repo := &unstructured.Unstructured{}
	repo.SetAPIVersion(kilnv1.FluxSourceGroup + "/v1")
	repo.SetKind("GitRepository")
	repo.SetNamespace(ns)
	repo.SetName("platform")
	repo.Object["spec"] = map[string]any{"url": "https://git.example/org/platform", "interval": "1m"}
	if err := s.k8s.Create(ctx, repo); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	repo.Object["status"] = map[string]any{
		"artifact": map[string]any{"url": url, "digest": testkit.Digest(artifact), "revision": "main@sha1:abc",
			"path": "gitrepository/platform/abc.tar.gz", "lastUpdateTime": now},
		"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "Succeeded",
			"message": "stored artifact", "lastTransitionTime": now}},
	}
	if err := s.k8s.Status().Update(ctx, repo); err != nil {
		t.Fatal(err)
	}
	layer := kilnv1.Layer{Name: "manifests", Source: &kilnv1.Source{
		SourceRef: &kilnv1.SourceReference{Kind: kilnv1.GitRepositoryKind, Name: "platform"},
		Path:      "./deploy", TargetDir: "/opt/config"}}
	ib := imageBuild(ns, "platform", "flux/platform", layer)
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "platform", 2*time.Minute)
	if got := ib.Status.Layers[0].SourceRevision; got != "main@sha1:abc" {
		t.Errorf("sourceRevision %q", got)
	}

	file := func(mode os.FileMode, body string) node {
		return node{Type: "file", Mode: mode, SHA256: testkit.Hex([]byte(body)), Size: int64(len(body))}
	}
	p := checkImage(t, digestRef(t, ib), wantImage{
		tree: tree{
			"opt":                     {Type: "dir", Mode: 0o755},
			"opt/config":              {Type: "dir", Mode: 0o755},
			"opt/config/app.yaml":     file(0o644, "replicas: 2\n"),
			"opt/config/bin":          {Type: "dir", Mode: 0o755},
			"opt/config/bin/run":      file(0o755, "#!/bin/sh\necho run\n"),
			"opt/config/current.yaml": {Type: "symlink", Target: "app.yaml"},
		},
		os: "linux", arch: "amd64",
	})
	if got := p.manifest.Annotations["org.opencontainers.image.source"] + " " + p.manifest.Annotations["org.opencontainers.image.revision"]; got != "https://git.example/org/platform main@sha1:abc" {
		t.Errorf("manifest annotations %q", got)
	}
	for _, h := range layerHeaders(t, digestRef(t, ib))[0] {
		if !strings.Contains(h, " 0:0 ") {
			t.Errorf("entry not root-owned: %s", h)
		}
	}

	// CI: the same files in a checkout, through kiln plan --source.
	checkout := t.TempDir()
	for name, c := range map[string]string{"deploy/app.yaml": "replicas: 2\n", "deploy/bin/run": "#!/bin/sh\necho run\n", "README.md": "outside path\n"} {
		full := filepath.Join(checkout, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o600)
		if strings.HasPrefix(c, "#!") {
			mode = 0o700
		}
		if err := os.WriteFile(full, []byte(c), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("app.yaml", filepath.Join(checkout, "deploy", "current.yaml")); err != nil {
		t.Fatal(err)
	}
	local := imageBuild("default", "platform", "flux/platform-ci", layer)
	local.TypeMeta = metav1.TypeMeta{APIVersion: kilnv1.GroupVersion.String(), Kind: "ImageBuild"}
	doc, err := yaml.Marshal(local)
	if err != nil {
		t.Fatal(err)
	}
	spec := filepath.Join(t.TempDir(), "platform.yaml")
	if err := os.WriteFile(spec, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(s.root, "bin", "kiln"), "plan", "-f", spec, "--source", "platform="+checkout,
		"--cache-dir", filepath.Join(t.TempDir(), "cache"), "-o", "json", "--progress=false")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kiln plan --source: %v", err)
	}
	var planned kilnv1.ImageBuild
	if err := json.Unmarshal(out, &planned); err != nil {
		t.Fatalf("plan output: %v\n%s", err, out)
	}
	if len(planned.Status.Layers) != 1 || planned.Status.Layers[0].DiffID != ib.Status.Layers[0].DiffID {
		t.Errorf("checkout layer %s, artifact layer %s", fmt.Sprint(planned.Status.Layers), ib.Status.Layers[0].DiffID)
	}
}
