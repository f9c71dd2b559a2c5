package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/source"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// env is the control plane and the running manager shared by the tests.
var env struct {
	cfg *rest.Config
	k8s client.Client // direct (uncached) client for the tests' own reads
	r   *ImageBuildReconciler
}

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	// Controller logs only on request: KILN_TEST_LOG=1 (debug with =2).
	level := slog.LevelError + 1
	switch os.Getenv("KILN_TEST_LOG") {
	case "1":
		level = slog.LevelInfo
	case "2":
		level = slog.LevelDebug
	}
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	te := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assetsDir(),
	}
	cfg, err := te.Start()
	if err != nil {
		// Never skip: a missing control plane is a broken setup, and says how to fix it.
		fmt.Fprintln(os.Stderr, "starting envtest control plane (run `make envtest-assets`):", err)
		return 1
	}
	defer func() { _ = te.Stop() }()
	cacheDir, err := os.MkdirTemp("", "kiln-controller-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(cacheDir)

	ctx, cancel := context.WithCancel(ctrl.LoggerInto(context.Background(), ctrl.Log))
	defer cancel()
	mgr, r, err := NewManager(ctx, cfg, ManagerOptions{
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		MaxConcurrentBuilds:    4,
		Engine: engine.Config{
			CacheDir: cacheDir,
			// Backoffs are real but short, so retry tests take milliseconds.
			Registry: registry.Options{Sleep: fastSleep},
			Source:   source.Options{Sleep: fastSleep},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating manager:", err)
		return 1
	}
	// Retries after a failure start at 50ms (production: 5s), so healing
	// tests take moments; an object may shorten its interval below the
	// CRD's 1m minimum with the testIntervalAnnotation.
	r.BackoffBase = 50 * time.Millisecond
	r.IntervalOf = testInterval
	env.cfg, env.r = cfg, r
	scheme, _ := NewScheme()
	if env.k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
	}
	return code
}

// testIntervalAnnotation sets an ImageBuild's interval in this suite (a
// Go duration), below the 1m minimum spec.interval allows.
const testIntervalAnnotation = "test.kiln.dev/interval"

func testInterval(ib *kilnv1.ImageBuild) (time.Duration, bool) {
	d, err := time.ParseDuration(ib.Annotations[testIntervalAnnotation])
	return d, err == nil && d > 0
}

func assetsDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	return filepath.Join("..", "bin", "k8s")
}

func fastSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d / 100)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitReady waits until the ImageBuild is Ready for its current generation
// and returns it.
func waitReady(t *testing.T, ns, name string) *kilnv1.ImageBuild {
	t.Helper()
	var ib *kilnv1.ImageBuild
	testkit.WaitFor(t, 60*time.Second, ns+"/"+name+" Ready", func() (bool, string) {
		ib = kube.Get(t, env.k8s, ns, name)
		return kube.Ready(ib), kube.Describe(ib)
	})
	return ib
}
