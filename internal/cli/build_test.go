package cli

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
)

// run executes the root command with args and returns stdout, stderr and the exit code.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	if err != nil {
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), ExitCode(err)
}

// writeSpec writes a multi-document spec file for a command to read.
func writeSpec(t *testing.T, spec string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ib.yaml")
	if err := os.WriteFile(file, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestBuildFromFileWithConfigMap(t *testing.T) {
	host := testkit.NewRegistry(t).Host
	spec := fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: app-files}
binaryData:
  app.tar.gz: %s
---
apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: app}
spec:
  layers:
  - name: app
    source: {configMap: {name: app-files, key: app.tar.gz}}
  config:
    env: [{name: GREETING, value: hello}]
  target: {image: %s/team/app:1.0}
`, base64.StdEncoding.EncodeToString(testkit.Gzip(t, testkit.Files(t, "app/run", "echo hi"))), host)
	file := writeSpec(t, spec)
	stdout, stderr, code := run(t, "build", "-f", file, "--cache-dir", t.TempDir(), "--progress=false")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var ib kilnv1.ImageBuild
	if err := yaml.UnmarshalStrict([]byte(stdout), &ib); err != nil {
		t.Fatalf("output is not one ImageBuild: %v\n%s", err, stdout)
	}
	if ib.Status.Digest == "" || len(ib.Status.Layers) != 1 || ib.Status.Layers[0].SourceCompression != "gzip" {
		t.Fatalf("status = %+v", ib.Status)
	}
	ref, _ := name.ParseReference(ib.Status.Image)
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pulling %s: %v", ib.Status.Image, err)
	}
	cf, _ := img.ConfigFile()
	if len(cf.Config.Env) != 1 || cf.Config.Env[0] != "GREETING=hello" {
		t.Errorf("env = %v", cf.Config.Env)
	}

	// plan of the same file: digests only, the registry already holds them.
	planOut, stderr, code := run(t, "plan", "-f", file, "--cache-dir", t.TempDir(), "-o", "json", "--progress=false")
	if code != 0 {
		t.Fatalf("plan exit %d: %s", code, stderr)
	}
	if !strings.Contains(planOut, ib.Status.Digest) || !strings.Contains(planOut, `"reason": "UpToDate"`) {
		t.Errorf("plan output lacks the digest or UpToDate:\n%s", planOut)
	}
}

func TestBuildSeveralPrintsAListAndFailsWhenOneFails(t *testing.T) {
	host := testkit.NewRegistry(t).Host
	spec := fmt.Sprintf(`apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: good}
spec:
  config: {env: [{name: A, value: b}]}
  target: {image: %[1]s/team/good:1}
---
apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: bad}
spec:
  layers:
  - name: missing
    source: {secret: {name: nope, key: layer.tar}}
  target: {image: %[1]s/team/bad:1}
`, host)
	file := writeSpec(t, spec)
	stdout, stderr, code := run(t, "build", "-f", file, "--cache-dir", t.TempDir(), "--progress=false")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stdout, "kind: List") || !strings.Contains(stdout, "name: good") || !strings.Contains(stdout, "name: bad") {
		t.Errorf("want a v1 List of both builds:\n%s", stdout)
	}
	if !strings.Contains(stderr, `default/bad: SourceNotFound: layer "missing": Secret "nope" not found`) {
		t.Errorf("stderr lacks one clear line for the failed build:\n%s", stderr)
	}
	if strings.Contains(stderr, "default/good") {
		t.Errorf("the good build is reported as failed:\n%s", stderr)
	}
}

func TestBuildRejectsUnknownKindsAndFields(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
		"apiVersion: kiln.dev/v1alpha1\nkind: ImageBuild\nmetadata: {name: x}\nspec: {target: {image: r/x}, layerz: []}\n",
	} {
		file := writeSpec(t, doc)
		_, stderr, code := run(t, "build", "-f", file, "--cache-dir", t.TempDir())
		if code != 2 || !strings.Contains(stderr, "document 0") {
			t.Errorf("exit %d, stderr %q: want 2 naming the document", code, stderr)
		}
	}
}

func TestBuildAndPlanTwoPlatforms(t *testing.T) {
	reg := testkit.NewRegistry(t)
	base := testkit.PushIndex(t, reg.Host+"/lib/base:1", testkit.IndexOptions{Attestation: true}, "linux/amd64", "linux/arm64/v8")
	files := testkit.NewFileServer(t)
	amd := files.Put("/app-amd64.tar", testkit.Files(t, "app/arch", "amd64"))
	arm := files.Put("/app-arm64.tar", testkit.Files(t, "app/arch", "arm64"))
	spec := fmt.Sprintf(`apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: multi}
spec:
  base: {image: %s}
  platforms: [{platform: linux/amd64}, {platform: linux/arm64/v8}]
  layers:
  - name: app
    variants:
    - {platform: linux/amd64, source: {url: %q}}
    - {platform: linux/arm64, source: {url: %q}}
  target: {image: %s/team/multi:1.0}
`, base.Ref, amd, arm, reg.Host)
	file := writeSpec(t, spec)
	planOut, stderr, code := run(t, "plan", "-f", file, "--cache-dir", t.TempDir(), "--progress=false")
	if code != 0 {
		t.Fatalf("plan exit %d: %s", code, stderr)
	}
	var planned kilnv1.ImageBuild
	if err := yaml.UnmarshalStrict([]byte(planOut), &planned); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	want := []string{
		"plan default/multi: linux/amd64 " + planned.Status.Manifests[0].Digest + " (1 added layer)",
		"plan default/multi: linux/arm64/v8 " + planned.Status.Manifests[1].Digest + " (1 added layer)",
		"plan default/multi: index " + planned.Status.Digest + " would push to " + reg.Host + "/team/multi:1.0",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("plan summary:\n%s\nwant:\n%s", stderr, strings.Join(want, "\n"))
	}
	stdout, stderr, code := run(t, "build", "-f", file, "--cache-dir", t.TempDir(), "--progress=false")
	if code != 0 {
		t.Fatalf("build exit %d: %s", code, stderr)
	}
	var built kilnv1.ImageBuild
	if err := yaml.UnmarshalStrict([]byte(stdout), &built); err != nil {
		t.Fatal(err)
	}
	if built.Status.Digest != planned.Status.Digest || len(built.Status.Manifests) != 2 {
		t.Errorf("build pushed %s with %d manifests, plan said %s", built.Status.Digest, len(built.Status.Manifests), planned.Status.Digest)
	}
}

// files, configMapDir and secretDir layers take their keys from the
// ConfigMap and Secret documents of the same file (stringData included).
func TestBuildFromFileWithGeneratedLayers(t *testing.T) {
	host := testkit.NewRegistry(t).Host
	spec := fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data:
  index.html: "<h1>hi</h1>"
binaryData:
  logo.png: %s
---
apiVersion: v1
kind: Secret
metadata: {name: tls}
stringData:
  key.pem: SECRET-KEY
---
apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: web}
spec:
  layers:
  - name: site
    source: {configMapDir: {name: site, targetDir: /srv/www}}
  - name: config
    source:
      files:
      - {path: /etc/app/app.yaml, content: "port: 8080"}
      - {path: /etc/app/key.pem, secretKeyRef: {name: tls, key: key.pem}, mode: "0600"}
      - {path: /etc/app/index.html, configMapKeyRef: {name: site, key: index.html}}
  - name: certs
    source: {secretDir: {name: tls, targetDir: /run/tls}}
  target: {image: %s/team/web:1}
`, base64.StdEncoding.EncodeToString([]byte{0x89, 'P', 'N', 'G'}), host)
	file := writeSpec(t, spec)
	stdout, stderr, code := run(t, "build", "-f", file, "--cache-dir", t.TempDir(), "--progress=false")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout+stderr, "SECRET-KEY") {
		t.Error("output shows the Secret value")
	}
	var ib kilnv1.ImageBuild
	if err := yaml.UnmarshalStrict([]byte(stdout), &ib); err != nil {
		t.Fatalf("output is not one ImageBuild: %v\n%s", err, stdout)
	}
	ref, _ := name.ParseReference(ib.Status.Image)
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pulling %s: %v", ib.Status.Image, err)
	}
	ls, err := img.Layers()
	if err != nil || len(ls) != 3 {
		t.Fatalf("layers %d, %v", len(ls), err)
	}
	want := []string{
		"srv/ srv/www/ srv/www/index.html=<h1>hi</h1> srv/www/logo.png=\x89PNG",
		"etc/ etc/app/ etc/app/app.yaml=port: 8080 etc/app/index.html=<h1>hi</h1> etc/app/key.pem=SECRET-KEY",
		"run/ run/tls/ run/tls/key.pem=SECRET-KEY",
	}
	for i, l := range ls {
		if got := listLayer(t, l); got != want[i] {
			t.Errorf("layer %d: %q, want %q", i, got, want[i])
		}
	}
	if s := ib.Status.Layers; s[1].SourceDigest != "secret:files" || s[2].SourceDigest != "secret:tls/*" || !strings.HasPrefix(s[0].SourceDigest, "sha256:") {
		t.Errorf("source digests %q %q %q", s[0].SourceDigest, s[1].SourceDigest, s[2].SourceDigest)
	}
}

// listLayer is "name" or "name=body" of every entry, space separated.
func listLayer(t *testing.T, l v1.Layer) string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []string
	for _, e := range testkit.ReadTar(t, rc) {
		if e.Header.Typeflag == tar.TypeDir {
			out = append(out, e.Header.Name)
		} else {
			out = append(out, e.Header.Name+"="+string(e.Body))
		}
	}
	return strings.Join(out, " ")
}
