package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/api/v1alpha1/v1alpha1test"
	"github.com/kiln-build/kiln/api/v1alpha1/validation"
)

// The validation rules live in the CRD (markers and CEL), so they are only
// proven by a real API server: this suite starts kube-apiserver and etcd from
// bin/k8s (make envtest-assets) and submits valid and invalid objects.

var k8s client.Client

func TestMain(m *testing.M) {
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assetsDir(),
	}
	cfg, err := env.Start()
	if err != nil {
		// Never skip: a missing control plane is a broken setup, and says how to fix it.
		println("starting envtest control plane (run `make envtest-assets`):", err.Error())
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	if err := kilnv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func assetsDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "bin", "k8s")
}

func TestValidImageBuildsAreAccepted(t *testing.T) {
	for _, ib := range v1alpha1test.ValidBuilds() {
		if err := k8s.Create(context.Background(), ib); err != nil {
			t.Errorf("creating %s: %v", ib.Name, err)
		}
	}
}

func TestSamplesAreAccepted(t *testing.T) {
	files, err := v1alpha1test.SampleFiles(filepath.Join("..", "..", "config", "samples"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found under config/samples (err %v)", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(data), "\n---") {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil || len(u.Object) == 0 {
				continue
			}
			if u.GetKind() != "ImageBuild" {
				continue
			}
			u.SetNamespace("default")
			u.SetName(u.GetName() + "-sample")
			if err := k8s.Create(context.Background(), u); err != nil {
				t.Errorf("%s document %d: %v", filepath.Base(f), i, err)
			}
		}
	}
}

// TestInvalidImageBuildsAreRejected submits the shared invalid cases and
// checks that kiln's offline validator (used by `kiln build -f`) gives
// exactly the API server's message: any drift between the two fails here.
func TestInvalidImageBuildsAreRejected(t *testing.T) {
	offline, err := validation.Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range v1alpha1test.InvalidCases() {
		t.Run(tc.Name, func(t *testing.T) {
			obj, err := tc.Object()
			if err != nil {
				t.Fatal(err)
			}
			err = k8s.Create(context.Background(), &unstructured.Unstructured{Object: obj})
			if err == nil {
				t.Fatalf("the API server accepted an invalid ImageBuild; want rejection containing %q", tc.Want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.Want) {
				t.Errorf("error %q\ndoes not contain %q", err.Error(), tc.Want)
			}
			obj, _ = tc.Object()
			if got := offline.ValidateObject(context.Background(), obj); got == nil || got.Error() != err.Error() {
				t.Errorf("offline validator disagrees with the API server:\n server: %v\noffline: %v", err, got)
			}
		})
	}
}

func TestPrinterColumnsAndShortName(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "kiln.dev_imagebuilds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"shortNames:\n    - ib", "categories:\n    - kiln", "name: Ready", "name: Image", "name: Age", "subresources:\n      status: {}"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("CRD lacks %q", want)
		}
	}
}
