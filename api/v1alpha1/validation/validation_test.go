package validation_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"

	"github.com/kiln-build/kiln/api/v1alpha1/v1alpha1test"
	"github.com/kiln-build/kiln/api/v1alpha1/validation"
)

// The same cases are submitted to a real API server in api/v1alpha1
// (envtest), which also asserts that its message equals this validator's.

func TestValidImageBuildsPass(t *testing.T) {
	v := mustDefault(t)
	for _, ib := range v1alpha1test.ValidBuilds() {
		if err := v.Validate(context.Background(), ib); err != nil {
			t.Errorf("%s: %v", ib.Name, err)
		}
	}
}

func TestInvalidImageBuildsFailWithTheAPIServersMessage(t *testing.T) {
	v := mustDefault(t)
	for _, tc := range v1alpha1test.InvalidCases() {
		t.Run(tc.Name, func(t *testing.T) {
			obj, err := tc.Object()
			if err != nil {
				t.Fatal(err)
			}
			err = v.ValidateObject(context.Background(), obj)
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", tc.Want)
			}
			if !apierrors.IsInvalid(err) {
				t.Errorf("want an Invalid StatusError, got %T: %v", err, err)
			}
			if !strings.Contains(err.Error(), tc.Want) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.Want)
			}
			if !strings.HasPrefix(err.Error(), `ImageBuild.kiln.dev "`+obj["metadata"].(map[string]any)["name"].(string)+`" is invalid: `) {
				t.Errorf("error %q does not name the ImageBuild as the API server does", err)
			}
		})
	}
}

func TestSamplesPass(t *testing.T) {
	v := mustDefault(t)
	files, err := v1alpha1test.SampleFiles(filepath.Join("..", "..", "..", "config", "samples"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found under config/samples (err %v)", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		obj := map[string]any{}
		if err := yaml.Unmarshal(data, &obj); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		obj["metadata"].(map[string]any)["namespace"] = "default"
		if err := v.ValidateObject(context.Background(), obj); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
}

// TestPrunesNullsAsTheAPIServerDoes: a null optional field is dropped
// before validation, not reported as a type error.
func TestPrunesNullsAsTheAPIServerDoes(t *testing.T) {
	obj, err := v1alpha1test.Case{Name: "nulls", Mutate: func(*kilnv1.ImageBuild) {}, MutateObject: func(obj map[string]any) {
		spec := obj["spec"].(map[string]any)
		spec["layers"], spec["base"] = nil, nil
	}}.Object()
	if err != nil {
		t.Fatal(err)
	}
	if err := mustDefault(t).ValidateObject(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func mustDefault(t *testing.T) *validation.Validator {
	t.Helper()
	v, err := validation.Default()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
