package cli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/yaml"

	"github.com/kiln-build/kiln/api/v1alpha1/v1alpha1test"
	"github.com/kiln-build/kiln/internal/testkit"
)

// TestPlanRefusesWhatTheAPIServerRefuses runs every invalid case the API
// server suite (api/v1alpha1) submits through `kiln plan -f`: each must stop
// before any build with the API server's message.
func TestPlanRefusesWhatTheAPIServerRefuses(t *testing.T) {
	for _, tc := range v1alpha1test.InvalidCases() {
		t.Run(tc.Name, func(t *testing.T) {
			obj, err := tc.Object()
			if err != nil {
				t.Fatal(err)
			}
			doc, err := yaml.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			file := writeSpec(t, string(doc))
			stdout, stderr, code := run(t, "plan", "-f", file, "--cache-dir", t.TempDir(), "--progress=false")
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, stderr)
			}
			if !strings.Contains(stderr, tc.Want) || !strings.Contains(stderr, file+" document 0: ImageBuild.kiln.dev ") {
				t.Errorf("stderr %q\nwant the document named and %q", stderr, tc.Want)
			}
			if stdout != "" {
				t.Errorf("plan printed a result for an invalid file:\n%s", stdout)
			}
		})
	}
}

// TestBuildOfAFileWithAnInvalidImageBuildPushesNothing: one invalid
// ImageBuild stops the whole file before the valid one is built.
func TestBuildOfAFileWithAnInvalidImageBuildPushesNothing(t *testing.T) {
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
metadata: {name: twice}
spec:
  layers:
  - {name: app, source: {url: "http://127.0.0.1:1/a.tar"}}
  - {name: app, source: {url: "http://127.0.0.1:1/b.tar"}}
  target: {image: %[1]s/team/twice:1}
`, host)
	file := writeSpec(t, spec)
	stdout, stderr, code := run(t, "build", "-f", file, "--cache-dir", t.TempDir(), "--progress=false")
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr %q", code, stderr)
	}
	want := file + ` document 1: ImageBuild.kiln.dev "twice" is invalid: spec: Invalid value: layer names must be unique`
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr %q\ndoes not contain %q", stderr, want)
	}
	if stdout != "" {
		t.Errorf("build printed results:\n%s", stdout)
	}
	reg, err := name.NewRegistry(host)
	if err != nil {
		t.Fatal(err)
	}
	repos, err := remote.Catalog(t.Context(), reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(repos) != 0 {
		t.Errorf("the registry holds %v after a refused build", repos)
	}
}

// TestFileValidationSeesFieldsTheGoTypesOmit: an empty base.image is
// dropped by omitempty when decoded, but the API server sees and refuses it.
func TestFileValidationSeesFieldsTheGoTypesOmit(t *testing.T) {
	doc := "apiVersion: kiln.dev/v1alpha1\nkind: ImageBuild\nmetadata: {name: x}\nspec: {base: {image: \"\", platform: linux/amd64}, target: {image: r.example/x}}\n"
	file := writeSpec(t, doc)
	_, stderr, code := run(t, "plan", "-f", file, "--cache-dir", t.TempDir())
	if want := `spec.base.image: Invalid value: "": spec.base.image in body should be at least 1 chars long`; code != 2 || !strings.Contains(stderr, want) {
		t.Errorf("exit %d, stderr %q: want 2 and %q", code, stderr, want)
	}
}
