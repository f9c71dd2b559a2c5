//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// manager is `bin/kiln manager` running as its own process, so that a test
// can SIGKILL it in the middle of a build and start it again.
type manager struct {
	cfg     managerConfig
	cmd     *exec.Cmd
	logPath string
	log     *os.File
	exited  chan struct{}
	waitErr error
}

type managerConfig struct {
	cacheDir string
	// binary is the kiln executable; default bin/kiln.
	binary string
	// env is added to the process environment (e.g. GOMAXPROCS=1).
	env []string
	// maxBuilds is --max-concurrent-builds; default 8 so the bad-input corpus'
	// slow transient rows do not starve the healthy build next to them.
	maxBuilds int
}

var managerRuns atomic.Int32

func startManager(ctx context.Context, st *suite, cfg managerConfig) (*manager, error) {
	if cfg.maxBuilds == 0 {
		cfg.maxBuilds = 8
	}
	if err := os.MkdirAll(cfg.cacheDir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	n := managerRuns.Add(1)
	m := &manager{cfg: cfg, exited: make(chan struct{}), logPath: filepath.Join(st.work, fmt.Sprintf("manager-%d.log", n))}
	if m.log, err = os.Create(m.logPath); err != nil {
		return nil, err
	}
	health := "127.0.0.1:" + strconv.Itoa(port)
	binary := cfg.binary
	if binary == "" {
		binary = filepath.Join(st.root, "bin", "kiln")
	}
	m.cmd = exec.Command(binary, "manager",
		"--cache-dir", cfg.cacheDir,
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", health,
		"--max-concurrent-builds", strconv.Itoa(cfg.maxBuilds),
		"--zap-encoder", "console",
		// The corpus' trickling source must fail within seconds, not the
		// default minute per attempt.
		"--min-transfer-window", "5s",
	)
	m.cmd.Env = append(append(os.Environ(), "KUBECONFIG="+st.kubeconfig), cfg.env...)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		m.log.Close()
		return nil, fmt.Errorf("starting the manager: %w", err)
	}
	go func() { m.waitErr = m.cmd.Wait(); close(m.exited) }()
	if err := m.waitReady(ctx, "http://"+health+"/readyz"); err != nil {
		_ = m.kill()
		return nil, err
	}
	return m, nil
}

func (m *manager) waitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c := &http.Client{Timeout: time.Second}
	for {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-m.exited:
			return fmt.Errorf("manager exited before it was ready (%v); its log:\n%s", m.waitErr, m.tail(30))
		case <-ctx.Done():
			return fmt.Errorf("manager not ready: %w; its log:\n%s", ctx.Err(), m.tail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// kill SIGKILLs the manager: no cleanup of any kind runs in it.
func (m *manager) kill() error {
	defer m.log.Close()
	if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing the manager: %w", err)
	}
	<-m.exited
	return nil
}

// stop asks the manager to shut down and kills it if it does not in time.
func (m *manager) stop() error {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
		m.log.Close()
		return nil
	case <-time.After(30 * time.Second):
		return errors.Join(errors.New("manager ignored SIGTERM for 30s"), m.kill())
	}
}

func (m *manager) tail(n int) string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// restartManager replaces the suite's manager with a new process.
func (st *suite) restartManager(ctx context.Context, cfg managerConfig, kill bool) error {
	var err error
	if kill {
		err = st.mgr.kill()
	} else {
		err = st.mgr.stop()
	}
	if err != nil {
		return err
	}
	st.mgr, err = startManager(ctx, st, cfg)
	return err
}

// tempLeftovers lists the blob store's temp files (*.tmp) under dir.
func tempLeftovers(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".tmp") {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
