package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
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

const sha = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func validBuild(name string) *kilnv1.ImageBuild {
	return &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: kilnv1.ImageBuildSpec{
			Base: &kilnv1.Base{Image: "scratch", Platform: "linux/arm64/v8"},
			Layers: []kilnv1.Layer{
				{Name: "rootfs", Source: kilnv1.Source{URL: "https://example.com/rootfs.tar.xz"}, Digest: sha, DiffID: sha, Compression: kilnv1.CompressionXz},
				{Name: "app", Source: kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "app", Key: "app.tar.gz"}}, Normalize: kilnv1.NormalizeReproducible},
				{Name: "creds", Source: kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "s", Key: "layer.tar"}}},
				{Name: "blob", Source: kilnv1.Source{Blob: "registry.example/team/artifacts@" + sha}},
			},
			Config: &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "PATH", Value: "/app/bin:$PATH"}}},
			Output: &kilnv1.Output{Compression: kilnv1.OutputZstd},
			Target: kilnv1.Target{Image: "registry.example/team/app:1.0", Tags: []string{"latest"}},
		},
	}
}

func TestValidImageBuildsAreAccepted(t *testing.T) {
	ctx := context.Background()
	objs := []*kilnv1.ImageBuild{validBuild("valid-full")}
	win := validBuild("valid-windows")
	win.Spec.Base = &kilnv1.Base{Image: "mcr.microsoft.com/windows/nanoserver:ltsc2022", Platform: "windows/amd64:10.0.20348"}
	objs = append(objs, win)
	archive := validBuild("valid-archive")
	archive.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: "http://files/base.tar.gz"}, Digest: sha}}
	objs = append(objs, archive)
	noBase := validBuild("valid-no-base")
	noBase.Spec.Base = nil
	objs = append(objs, noBase)
	for _, ib := range objs {
		if err := k8s.Create(ctx, ib); err != nil {
			t.Errorf("creating %s: %v", ib.Name, err)
		}
	}
}

func TestSamplesAreAccepted(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "kiln_v1alpha1_*.yaml"))
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

func TestInvalidImageBuildsAreRejected(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(ib *kilnv1.ImageBuild)
		want   string
	}{
		{"image and archive", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Base.Archive = &kilnv1.Archive{Source: kilnv1.Source{URL: "https://x/a.tar"}}
		}, "exactly one of base.image or base.archive must be set"},
		{"neither image nor archive", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Base = &kilnv1.Base{Platform: "linux/amd64"}
		}, "exactly one of base.image or base.archive must be set"},
		{"two sources", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Layers[0].Source.Blob = "r.example/x@" + sha
		}, "exactly one of url, configMap, secret or blob must be set"},
		{"no source", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Layers[0].Source = kilnv1.Source{}
		}, "exactly one of url, configMap, secret or blob must be set"},
		{"bad digest", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Digest = "sha256:abc" },
			`spec.layers[0].digest: Invalid value: "sha256:abc"`},
		{"uppercase diffID", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].DiffID = strings.ToUpper(sha) },
			"spec.layers[0].diffID: Invalid value"},
		{"bad archive digest", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: "https://x/a.tar"}, Digest: "md5:00"}}
		}, "spec.base.archive.digest: Invalid value"},
		{"compression enum", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Compression = "lz4" },
			`spec.layers[0].compression: Unsupported value: "lz4"`},
		{"output compression enum", func(ib *kilnv1.ImageBuild) { ib.Spec.Output.Compression = "xz" },
			`spec.output.compression: Unsupported value: "xz"`},
		{"normalize enum", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[1].Normalize = "strict" },
			`spec.layers[1].normalize: Unsupported value: "strict"`},
		{"target image empty", func(ib *kilnv1.ImageBuild) { ib.Spec.Target.Image = "" },
			"spec.target.image"},
		{"duplicate layer names", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[1].Name = "rootfs" },
			"layer names must be unique"},
		{"layer name not a DNS label", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Name = "Root_FS" },
			`spec.layers[0].name: Invalid value: "Root_FS"`},
		{"platform shape", func(ib *kilnv1.ImageBuild) { ib.Spec.Base.Platform = "linux" },
			`spec.base.platform: Invalid value: "linux"`},
		{"url scheme", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Source.URL = "ftp://x/y.tar" },
			"spec.layers[0].source.url: Invalid value"},
		{"blob without digest", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[3].Source.Blob = "r.example/x:latest" },
			"spec.layers[3].source.blob: Invalid value"},
		{"configMap without key", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[1].Source.ConfigMap.Key = "" },
			"spec.layers[1].source.configMap.key"},
		{"base update policy enum", func(ib *kilnv1.ImageBuild) { ib.Spec.Base.UpdatePolicy = "Ignore" },
			`spec.base.updatePolicy: Unsupported value: "Ignore"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ib := validBuild("invalid-" + strings.ToLower(strings.ReplaceAll(tt.name, " ", "-")))
			_ = i
			tt.mutate(ib)
			err := k8s.Create(context.Background(), ib)
			if err == nil {
				t.Fatalf("the API server accepted an invalid ImageBuild; want rejection containing %q", tt.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not contain %q", err.Error(), tt.want)
			}
		})
	}
}

func TestMissingTargetIsRejected(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kiln.dev/v1alpha1", "kind": "ImageBuild",
		"metadata": map[string]any{"name": "no-target", "namespace": "default"},
		"spec":     map[string]any{"base": map[string]any{"image": "scratch"}},
	}}
	err := k8s.Create(context.Background(), u)
	if err == nil || !strings.Contains(err.Error(), "spec.target: Required value") {
		t.Fatalf("want spec.target required, got %v", err)
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
