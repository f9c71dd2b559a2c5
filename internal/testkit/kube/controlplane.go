package kube

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// StartControlPlane starts an envtest control plane of its own (etcd and
// kube-apiserver from $KUBEBUILDER_ASSETS, else <root>/bin/k8s) with kiln's
// CRD from <root>/config/crd/bases, stopped at cleanup, and returns its
// config and a client that knows client-go's and kiln's types. root is the
// path of the repository's top from the test's package directory, e.g.
// "../..". A missing control plane fails the test and says how to build it:
// never a skip.
func StartControlPlane(tb testing.TB, root string) (*rest.Config, client.Client) {
	tb.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin", "k8s")
	}
	te := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := te.Start()
	if err != nil {
		tb.Fatalf("starting envtest control plane (run `make envtest-assets`): %v", err)
	}
	tb.Cleanup(func() { _ = te.Stop() })
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	if err := kilnv1.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		tb.Fatal(err)
	}
	return cfg, c
}
