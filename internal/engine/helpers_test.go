package engine

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/blobstore"
	kilnregistry "github.com/kiln-build/kiln/internal/registry"
)

func newEngine(t testing.TB, cacheDir string) *Engine {
	t.Helper()
	if cacheDir == "" {
		cacheDir = t.TempDir()
	}
	store, err := blobstore.Open(cacheDir, blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &Engine{
		Store:    store,
		Registry: kilnregistry.Options{Retries: 3, Sleep: func(context.Context, time.Duration) error { return nil }},
	}
}

func imageBuild(name, target string, layers ...kilnv1.Layer) *kilnv1.ImageBuild {
	ib := &kilnv1.ImageBuild{}
	ib.Name, ib.Namespace, ib.Generation = name, "default", 1
	ib.Spec.Base = &kilnv1.Base{Image: "scratch"}
	ib.Spec.Layers = layers
	ib.Spec.Target.Image = target
	return ib
}

func urlLayer(name, url string) kilnv1.Layer {
	return kilnv1.Layer{Name: name, Source: &kilnv1.Source{URL: url}}
}

func globBlobs(root string) ([]string, error) {
	return filepath.Glob(filepath.Join(root, "blobs", "sha256", "*"))
}
