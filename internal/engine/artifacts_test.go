package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

// fluxArtifact is a tar.gz as source-controller writes it: files 0600 (an
// executable 0700), directories 0750.
func fluxArtifact(t *testing.T, app string) []byte {
	return testkit.Gzip(t, testkit.Tar(t,
		testkit.Dir("deploy/").WithMode(0o750),
		testkit.Dir("deploy/base/").WithMode(0o750),
		testkit.File("deploy/base/app.yaml", app).WithMode(0o600),
		testkit.File("deploy/base/bin/run", "#!/bin/sh").WithMode(0o700),
		testkit.File("README.md", "hi").WithMode(0o600),
	))
}

func gitLayer(path, target string) kilnv1.Layer {
	return kilnv1.Layer{Name: "manifests", Source: &kilnv1.Source{
		SourceRef: &kilnv1.SourceReference{Kind: kilnv1.GitRepositoryKind, Name: "platform"}, Path: path, TargetDir: target}}
}

// A sourceRef layer is the artifact's path under targetDir, readable by
// any user (0644, executables 0755, directories 0755, root-owned); status
// records the revision, the image the source and revision annotations.
func TestSourceRefLayer(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	body := fluxArtifact(t, "kind: Deployment")
	url := files.Put("/gitrepository/ns/platform/abc.tar.gz", body)
	ib := imageBuild("cfg", reg.Host+"/team/cfg:1", gitLayer("./deploy/base", "/opt/config"))
	in := Inputs{Artifacts: map[string]Artifact{"GitRepository/platform": {
		URL: url, Digest: testkit.Digest(body), Revision: "main@sha1:abc",
		SourceURL: "https://user:token@git.example/org/platform?x=1",
	}}}
	res, err := newEngine(t, "").Build(context.Background(), ib, in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := pull(t, res.Status.Image)
	want := []string{
		`opt/ 755 0:0 0 ""`, `opt/config/ 755 0:0 0 ""`,
		`opt/config/app.yaml 644 0:0 0 "kind: Deployment"`,
		`opt/config/bin/ 755 0:0 0 ""`,
		`opt/config/bin/run 755 0:0 0 "#!/bin/sh"`,
	}
	if got := tarEntries(t, layerTar(t, img, 0)); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer:\n got %s\nwant %s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := res.Status.Layers[0].SourceRevision; got != "main@sha1:abc" {
		t.Errorf("sourceRevision %q", got)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(m.Annotations[AnnotationSource], " ", m.Annotations[AnnotationRevision]); got != "https://git.example/org/platform main@sha1:abc" {
		t.Errorf("annotations %q (no userinfo, no query)", got)
	}

	// The spec's own annotation wins; a directory with the same files
	// builds the same layer.
	ib.Spec.Annotations = map[string]string{AnnotationRevision: "v1"}
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"deploy/base/app.yaml": "kind: Deployment", "deploy/base/bin/run": "#!/bin/sh"})
	res2, err := newEngine(t, "").Build(context.Background(), ib, Inputs{Artifacts: map[string]Artifact{"GitRepository/platform": {Dir: dir}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Status.Layers[0].DiffID != res.Status.Layers[0].DiffID {
		t.Errorf("directory diffID %s, artifact %s", res2.Status.Layers[0].DiffID, res.Status.Layers[0].DiffID)
	}
	m2, err := pull(t, res2.Status.Image).Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if got := m2.Annotations[AnnotationRevision]; got != "v1" {
		t.Errorf("spec annotation replaced: %q", got)
	}
}

func TestSourceRefFailures(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	body := fluxArtifact(t, "x")
	url := files.Put("/a.tar.gz", body)
	other := testkit.Digest([]byte("other"))
	tests := []struct {
		name   string
		layer  kilnv1.Layer
		art    map[string]Artifact
		reason failure.Reason
		want   string
	}{
		{"digest mismatch", gitLayer("", ""), map[string]Artifact{"GitRepository/platform": {URL: url, Digest: other}},
			failure.DigestMismatch, other},
		{"no artifact", gitLayer("", ""), nil, failure.SourceNotFound,
			`layer "manifests": GitRepository "platform": no artifact was resolved for it`},
		{"missing path", gitLayer("deploy/overlays", ""), map[string]Artifact{"GitRepository/platform": {URL: url, Digest: testkit.Digest(body)}},
			failure.SourceNotFound, `path "deploy/overlays" is not in the artifact`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ib := imageBuild("cfg", reg.Host+"/team/cfg:1", tt.layer)
			_, err := newEngine(t, "").Build(context.Background(), ib, Inputs{Artifacts: tt.art}, Options{})
			if err == nil || failure.ReasonOf(err) != tt.reason || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v (%s), want %s containing %q", err, failure.ReasonOf(err), tt.reason, tt.want)
			}
		})
	}
}

// writeTree writes files (path: content; 0700 when it starts with "#!",
// else 0600, directories 0750) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
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
}
