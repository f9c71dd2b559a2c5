package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ControlPlaneOptions configure StartControlPlane. The zero value works from
// inside a kiln checkout.
type ControlPlaneOptions struct {
	// Root is the kiln checkout; default RepoRoot().
	Root string
	// AssetsDir holds etcd and kube-apiserver; default $KUBEBUILDER_ASSETS,
	// else <Root>/bin/k8s.
	AssetsDir string
	// CRDDirs are installed before Start returns; default <Root>/config/crd/bases.
	CRDDirs []string
	// Output, when set, receives the etcd and kube-apiserver logs.
	Output io.Writer
	// StartTimeout bounds each process start; default 60s.
	StartTimeout time.Duration
}

// ControlPlane is a running etcd + kube-apiserver with kiln's CRDs installed.
type ControlPlane struct {
	env *envtest.Environment
	cfg *rest.Config
}

// AssetsDir returns where the control plane binaries are looked up.
func AssetsDir(root string) string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	return filepath.Join(root, "bin", "k8s")
}

// CheckControlPlaneAssets fails with the make target to run when etcd or
// kube-apiserver is missing from dir.
func CheckControlPlaneAssets(dir string) error {
	for _, name := range []string{"etcd", "kube-apiserver"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("control plane binary %s is missing: run `make envtest-assets` (builds etcd and kube-apiserver into bin/k8s)", p)
		}
	}
	return nil
}

// StartControlPlane starts etcd and kube-apiserver, waits until the default
// namespace exists and installs the CRDs. On error nothing is left running.
func StartControlPlane(ctx context.Context, o ControlPlaneOptions) (*ControlPlane, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if err := CheckControlPlaneAssets(o.AssetsDir); err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    o.AssetsDir,
		CRDDirectoryPaths:        o.CRDDirs,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: o.StartTimeout,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	if o.Output != nil {
		env.ControlPlane.Etcd = &envtest.Etcd{Out: o.Output, Err: o.Output}
		env.ControlPlane.APIServer = &envtest.APIServer{Out: o.Output, Err: o.Output}
	}
	cfg, err := startEnv(ctx, env)
	if err != nil {
		return nil, err
	}
	return &ControlPlane{env: env, cfg: cfg}, nil
}

func (o *ControlPlaneOptions) defaults() error {
	if o.Root == "" {
		root, err := RepoRoot()
		if err != nil {
			return err
		}
		o.Root = root
	}
	if o.AssetsDir == "" {
		o.AssetsDir = AssetsDir(o.Root)
	}
	if len(o.CRDDirs) == 0 {
		o.CRDDirs = []string{filepath.Join(o.Root, "config", "crd", "bases")}
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	return nil
}

// startEnv runs env.Start, which takes no context, so that a cancelled ctx
// returns at once; the start then finishes in the background and is stopped.
func startEnv(ctx context.Context, env *envtest.Environment) (*rest.Config, error) {
	type result struct {
		cfg *rest.Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := env.Start()
		done <- result{cfg, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			// A half-started environment (etcd up, apiserver failed) still
			// holds processes and temp dirs.
			return nil, errors.Join(fmt.Errorf("starting the control plane: %w", r.err), env.Stop())
		}
		return r.cfg, nil
	case <-ctx.Done():
		go func() { <-done; _ = env.Stop() }()
		return nil, fmt.Errorf("starting the control plane: %w", ctx.Err())
	}
}

// Config returns an admin (system:masters) REST config for the API server.
func (c *ControlPlane) Config() *rest.Config { return rest.CopyConfig(c.cfg) }

// Kubeconfig returns a kubeconfig file's bytes for the admin user, for
// kubectl and other clients outside the process.
func (c *ControlPlane) Kubeconfig() []byte { return append([]byte(nil), c.env.KubeConfig...) }

// WriteKubeconfig writes Kubeconfig to path with owner-only permissions (it
// holds a client certificate).
func (c *ControlPlane) WriteKubeconfig(path string) error {
	if err := os.WriteFile(path, c.env.KubeConfig, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return nil
}

// Stop stops kube-apiserver and etcd and removes their data directories.
func (c *ControlPlane) Stop() error {
	if err := c.env.Stop(); err != nil {
		return fmt.Errorf("stopping the control plane: %w", err)
	}
	return nil
}
