package image_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/api/v1alpha1/validation"
	"github.com/kiln-build/kiln/config/image"
)

func values() image.Values {
	return image.Values{
		"IMG":           "127.0.0.1:5000/kiln:dev",
		"VERSION":       "v0.3.0-4-g1b238cb-dirty",
		"REVISION":      "1b238cb9d0c3e1f5a3c1a3e9f0d1c2b3a4f5e6d7",
		"CREATED":       "2025-12-02T06:25:00Z",
		"SOURCE":        "https://github.com/kiln-build/kiln",
		"PLATFORM":      "linux/amd64",
		"SYSTEM_URL":    "http://127.0.0.1:40001/system.tar",
		"SYSTEM_DIGEST": "sha256:" + strings.Repeat("a", 64),
		"KILN_URL":      "http://127.0.0.1:40001/kiln.tar",
		"KILN_DIGEST":   "sha256:" + strings.Repeat("b", 64),
	}
}

// validate checks doc the way `kiln build -f` does (internal/cli
// validateImageBuild): the document as written, against the embedded CRD.
func validate(t *testing.T, doc []byte) *kilnv1.ImageBuild {
	t.Helper()
	v, err := validation.Default()
	if err != nil {
		t.Fatal(err)
	}
	data, err := yaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatalf("rendered kiln.yaml is not YAML: %v\n%s", err, doc)
	}
	obj := map[string]any{}
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	obj["metadata"].(map[string]any)["namespace"] = "default"
	if err := v.ValidateObject(context.Background(), obj); err != nil {
		t.Fatalf("rendered kiln.yaml fails the CRD's validation: %v\n%s", err, doc)
	}
	ib := &kilnv1.ImageBuild{}
	if err := yaml.UnmarshalStrict(doc, ib); err != nil {
		t.Fatalf("rendered kiln.yaml does not decode strictly: %v", err)
	}
	return ib
}

func TestRenderedKilnImageBuildIsValid(t *testing.T) {
	// Values YAML would not read as the strings they are, were they
	// written unquoted.
	rows := []struct {
		name, key, value string
	}{
		{"plain", "VERSION", "v0.3.0"},
		{"revision of digits only", "REVISION", "1234567890123456789012345678901234567890"},
		{"version that reads as a float", "VERSION", "1e10"},
		{"version that reads as a bool", "VERSION", "yes"},
		{"colon and hash", "VERSION", "a: b # c"},
		{"quotes and backslash", "VERSION", `"x\y'`},
		{"newline", "VERSION", "a\nb"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			vals := values()
			vals[r.key] = r.value
			doc, err := image.Render(vals)
			if err != nil {
				t.Fatal(err)
			}
			ib := validate(t, doc)
			label := map[string]string{"VERSION": "org.opencontainers.image.version", "REVISION": "org.opencontainers.image.revision"}[r.key]
			if got := ib.Spec.Config.Labels[label]; got != r.value {
				t.Errorf("label %s = %q, want %q", label, got, r.value)
			}
			if got := ib.Spec.Annotations[label]; got != r.value {
				t.Errorf("annotation %s = %q, want %q", label, got, r.value)
			}
		})
	}
}

// TestRenderedKilnImageBuildSpec pins what the image is: scratch, the two
// layers by pinned digest, non-root, /kiln manager.
func TestRenderedKilnImageBuildSpec(t *testing.T) {
	vals := values()
	doc, err := image.Render(vals)
	if err != nil {
		t.Fatal(err)
	}
	ib := validate(t, doc)
	sp := ib.Spec
	if sp.Base.Image != kilnv1.ScratchImage || sp.Base.Platform != vals["PLATFORM"] {
		t.Errorf("base = %+v, want scratch %s", sp.Base, vals["PLATFORM"])
	}
	if sp.Created == nil || sp.Created.UTC().Format("2006-01-02T15:04:05Z") != vals["CREATED"] {
		t.Errorf("created = %v, want %s", sp.Created, vals["CREATED"])
	}
	if sp.Normalize != kilnv1.NormalizeReproducible {
		t.Errorf("normalize = %q, want reproducible", sp.Normalize)
	}
	want := []kilnv1.Layer{
		{Name: "system", Source: &kilnv1.Source{URL: vals["SYSTEM_URL"]}, Digest: vals["SYSTEM_DIGEST"]},
		{Name: "kiln", Source: &kilnv1.Source{URL: vals["KILN_URL"]}, Digest: vals["KILN_DIGEST"]},
	}
	if len(sp.Layers) != len(want) {
		t.Fatalf("layers = %+v, want %+v", sp.Layers, want)
	}
	for i := range want {
		if !equality.Semantic.DeepEqual(sp.Layers[i], want[i]) {
			t.Errorf("layer %d = %+v, want %+v", i, sp.Layers[i], want[i])
		}
	}
	c := sp.Config
	if c.User != "65532:65532" || strings.Join(c.Entrypoint, " ") != "/kiln" || strings.Join(c.Cmd, " ") != "manager" {
		t.Errorf("config user %q entrypoint %q cmd %q, want 65532:65532 [/kiln] [manager]", c.User, c.Entrypoint, c.Cmd)
	}
	if got := c.Labels["org.opencontainers.image.source"]; got != vals["SOURCE"] {
		t.Errorf("source label = %q, want %q", got, vals["SOURCE"])
	}
	if sp.Target.Image != vals["IMG"] {
		t.Errorf("target = %q, want %q", sp.Target.Image, vals["IMG"])
	}
}

func TestRenderRefusesMissingAndUnknownValues(t *testing.T) {
	rows := []struct {
		name string
		edit func(image.Values)
		want string
	}{
		{"missing", func(v image.Values) { delete(v, "REVISION") }, "no value for ${REVISION}"},
		{"empty", func(v image.Values) { v["IMG"] = "" }, "no value for ${IMG}"},
		{"unknown", func(v image.Values) { v["TAG"] = "x" }, "a value for TAG, which the file does not use"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			vals := values()
			r.edit(vals)
			_, err := image.Render(vals)
			if err == nil || !strings.Contains(err.Error(), r.want) {
				t.Fatalf("Render: %v, want an error containing %q", err, r.want)
			}
		})
	}
}
