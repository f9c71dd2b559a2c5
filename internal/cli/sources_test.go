package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
)

const sourceRefSpec = `apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: cfg}
spec:
  layers:
  - name: manifests
    source:
      sourceRef: {kind: GitRepository, name: platform}
      path: ./deploy
      targetDir: /opt/config
  target: {image: %s/team/cfg:1}
`

// checkout writes a repository as a clone leaves it for a user with umask
// 077: files 0600, an executable 0700, directories 0700, and a .git dir.
func checkout(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range map[string]string{
		"deploy/app.yaml": "replicas: 1", "deploy/bin/run": "#!/bin/sh", "README.md": "hi", ".git/HEAD": "ref: main",
	} {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
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
	return dir
}

// --source stands in for a sourceRef: the directory's path becomes the
// layer under targetDir with the sourceRef defaults (0644, executables
// 0755, directories 0755, root), for build and plan alike.
func TestBuildWithLocalSource(t *testing.T) {
	host := testkit.NewRegistry(t).Host
	file := writeSpec(t, fmt.Sprintf(sourceRefSpec, host))
	dir := checkout(t)
	stdout, stderr, code := run(t, "build", "-f", file, "--source", "platform="+dir, "--cache-dir", t.TempDir(), "--progress=false")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var ib kilnv1.ImageBuild
	if err := yaml.UnmarshalStrict([]byte(stdout), &ib); err != nil {
		t.Fatalf("output: %v\n%s", err, stdout)
	}
	ref, err := name.ParseReference(ib.Status.Image)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got []string
	for _, e := range testkit.ReadTar(t, rc) {
		got = append(got, fmt.Sprintf("%s %o %d:%d", e.Header.Name, e.Header.Mode, e.Header.Uid, e.Header.Gid))
	}
	want := "opt/ 755 0:0\nopt/config/ 755 0:0\nopt/config/app.yaml 644 0:0\nopt/config/bin/ 755 0:0\nopt/config/bin/run 755 0:0"
	if strings.Join(got, "\n") != want {
		t.Errorf("layer\n%s\nwant\n%s", strings.Join(got, "\n"), want)
	}

	planOut, stderr, code := run(t, "plan", "-f", file, "--source", "platform="+dir, "--cache-dir", t.TempDir(), "--progress=false")
	if code != 0 || !strings.Contains(planOut, ib.Status.Digest) {
		t.Errorf("plan exit %d (%s), output lacks %s", code, stderr, ib.Status.Digest)
	}
}

func TestLocalSourceErrors(t *testing.T) {
	file := writeSpec(t, fmt.Sprintf(sourceRefSpec, "127.0.0.1:1"))
	dir := checkout(t)
	notDir := filepath.Join(dir, "README.md")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no --source", nil, "ImageBuild default/cfg: sourceRef GitRepository/platform needs --source platform=DIR"},
		{"unused --source", []string{"--source", "platform=" + dir, "--source", "plat=" + dir}, `--source plat: no ImageBuild has a sourceRef named "plat"`},
		{"not NAME=DIR", []string{"--source", dir}, "want NAME=DIR"},
		{"not a directory", []string{"--source", "platform=" + notDir}, "is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"build", "-f", file, "--cache-dir", t.TempDir(), "--progress=false"}, tt.args...)
			_, stderr, code := run(t, args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tt.want)
			}
		})
	}
}
