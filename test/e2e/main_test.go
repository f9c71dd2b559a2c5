//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kiln-build/kiln/controllers"
	"github.com/kiln-build/kiln/internal/sandbox"
)

// suite holds the parts every test shares. One control plane, one registry,
// one file server and one manager process serve the whole run; tests that
// kill or restart the manager or the registry leave them running again.
type suite struct {
	root       string
	work       string // per-run directory: fixtures, logs, caches, unpacked images
	kubeconfig string
	cp         *sandbox.ControlPlane
	k8s        client.Client
	reg        *sandbox.Registry
	files      *sandbox.FileServer
	filesDir   string
	mgr        *manager
	started    time.Time
}

var s *suite

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	start := time.Now()
	var err error
	s, err = setUp()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e setup failed: %v\n", err)
		if s != nil {
			s.tearDown(true)
		}
		return 1
	}
	fmt.Printf("e2e: parts up in %s (work dir %s)\n", time.Since(start).Round(time.Millisecond), s.work)
	code := m.Run()
	s.tearDown(code != 0)
	fmt.Printf("e2e: total %s\n", time.Since(start).Round(time.Second))
	return code
}

// requiredTools are the independent clients; hack/e2e-deps.sh installs them.
var requiredTools = []struct{ cmd, pkg string }{
	{"skopeo", "skopeo"},
	{"umoci", "umoci"},
	{"bzip2", "bzip2"},
}

// busyboxPath is the statically linked busybox of Debian's busybox-static.
const busyboxPath = "/bin/busybox"

// checkParts fails with every missing part named and how to get it.
func checkParts(root string) error {
	var missing []string
	for _, tool := range requiredTools {
		if _, err := exec.LookPath(tool.cmd); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s; run hack/e2e-deps.sh)", tool.cmd, tool.pkg))
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "busybox-static").Output(); err != nil || !strings.Contains(string(out), "install ok installed") {
		missing = append(missing, "busybox-static (Debian package; run hack/e2e-deps.sh)")
	}
	if err := sandbox.CheckControlPlaneAssets(sandbox.AssetsDir(root)); err != nil {
		missing = append(missing, err.Error())
	}
	if err := sandbox.CheckRegistryBinary(sandbox.RegistryBinary(root)); err != nil {
		missing = append(missing, err.Error())
	}
	if fi, err := os.Stat(filepath.Join(root, "bin", "cosign")); err != nil || fi.Mode()&0o111 == 0 {
		missing = append(missing, filepath.Join(root, "bin", "cosign")+" (run hack/cosign.sh or `make cosign`)")
	}
	if fi, err := os.Stat(filepath.Join(root, "bin", "kiln")); err != nil || fi.Mode()&0o111 == 0 {
		missing = append(missing, filepath.Join(root, "bin", "kiln")+" (run `make build`)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing parts:\n  - %s", strings.Join(missing, "\n  - "))
	}
	return nil
}

func setUp() (*suite, error) {
	root, err := sandbox.RepoRoot()
	if err != nil {
		return nil, err
	}
	if err := checkParts(root); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "kiln-e2e-")
	if err != nil {
		return nil, err
	}
	st := &suite{root: root, work: work, started: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cpLog, err := os.Create(filepath.Join(work, "controlplane.log"))
	if err != nil {
		return st, err
	}
	if st.cp, err = sandbox.StartControlPlane(ctx, sandbox.ControlPlaneOptions{Root: root, Output: cpLog}); err != nil {
		return st, err
	}
	st.kubeconfig = filepath.Join(work, "kubeconfig")
	if err := st.cp.WriteKubeconfig(st.kubeconfig); err != nil {
		return st, err
	}
	scheme, err := controllers.NewScheme()
	if err != nil {
		return st, err
	}
	if st.k8s, err = client.New(st.cp.Config(), client.Options{Scheme: scheme}); err != nil {
		return st, fmt.Errorf("creating the kube client: %w", err)
	}
	if st.reg, err = sandbox.StartRegistry(ctx, sandbox.RegistryOptions{
		Binary: sandbox.RegistryBinary(root), Dir: filepath.Join(work, "registry"),
	}); err != nil {
		return st, err
	}
	st.filesDir = filepath.Join(work, "files")
	if err := os.MkdirAll(st.filesDir, 0o755); err != nil {
		return st, err
	}
	if st.files, err = sandbox.StartFileServer(st.filesDir); err != nil {
		return st, err
	}
	if st.mgr, err = startManager(ctx, st, managerConfig{cacheDir: filepath.Join(work, "cache-main")}); err != nil {
		return st, err
	}
	return st, nil
}

func (st *suite) tearDown(failed bool) {
	var errs []error
	if st.mgr != nil {
		errs = append(errs, st.mgr.stop())
	}
	if st.files != nil {
		errs = append(errs, st.files.Close())
	}
	if st.reg != nil {
		errs = append(errs, st.reg.Stop())
	}
	if st.cp != nil {
		errs = append(errs, st.cp.Stop())
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(os.Stderr, "e2e teardown: %v\n", err)
	}
	if failed || os.Getenv("KILN_E2E_KEEP") != "" {
		fmt.Printf("e2e: kept work dir %s (manager logs: %s/manager-*.log)\n", st.work, st.work)
		return
	}
	_ = os.RemoveAll(st.work)
}

// serveFile writes b under the file server's directory and returns its URL.
func (st *suite) serveFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(st.filesDir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return st.files.URL(name)
}

// step logs how long a named part of a scenario took, for the run's record.
func step(t testing.TB, name string) func() {
	start := time.Now()
	return func() { t.Helper(); t.Logf("step %-40s %s", name, time.Since(start).Round(time.Millisecond)) }
}
