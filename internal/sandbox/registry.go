package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// RegistryVersion is the CNCF distribution release hack/registry.sh builds.
const RegistryVersion = "v3.0.0"

// RegistryOptions configure StartRegistry. The zero value works from inside a
// kiln checkout.
type RegistryOptions struct {
	// Binary is the registry executable; default <RepoRoot>/bin/registry.
	Binary string
	// Dir holds config, storage and logs; default a new temp dir, removed by
	// Stop unless Keep.
	Dir string
	// Keep leaves Dir in place after Stop (to inspect storage and logs).
	Keep bool
	// ReadyTimeout bounds the wait for /v2/ to answer; default 30s.
	ReadyTimeout time.Duration
}

// Registry is a running distribution registry on 127.0.0.1 with filesystem
// storage and delete enabled. Plain http: clients treat loopback as insecure.
type Registry struct {
	addr    string
	dir     string
	keep    bool
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error
	files   []*os.File
}

// RegistryBinary returns where StartRegistry looks for the registry by default.
func RegistryBinary(root string) string { return filepath.Join(root, "bin", "registry") }

// CheckRegistryBinary fails with the script to run when bin is missing.
func CheckRegistryBinary(bin string) error {
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("registry binary %s is missing: run hack/registry.sh (or `make registry`) to build distribution %s into bin/", bin, RegistryVersion)
	}
	return nil
}

// StartRegistry starts the registry and waits until /v2/ answers.
func StartRegistry(ctx context.Context, o RegistryOptions) (*Registry, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if err := CheckRegistryBinary(o.Binary); err != nil {
		return nil, err
	}
	dir, owned, err := registryDir(o.Dir)
	if err != nil {
		return nil, err
	}
	// The free port may be taken between probing and binding; one more try
	// with a fresh port makes that race harmless.
	var r *Registry
	for attempt := 0; attempt < 2; attempt++ {
		r, err = startRegistryOnce(ctx, o, dir)
		if err == nil {
			r.keep = o.Keep || !owned
			return r, nil
		}
	}
	if owned && !o.Keep {
		_ = os.RemoveAll(dir)
	}
	return nil, err
}

func (o *RegistryOptions) defaults() error {
	if o.Binary == "" {
		root, err := RepoRoot()
		if err != nil {
			return err
		}
		o.Binary = RegistryBinary(root)
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	return nil
}

func registryDir(dir string) (string, bool, error) {
	if dir != "" {
		return dir, false, os.MkdirAll(dir, 0o755)
	}
	d, err := os.MkdirTemp("", "kiln-registry-")
	if err != nil {
		return "", false, fmt.Errorf("creating the registry directory: %w", err)
	}
	return d, true, nil
}

// registryConfig is distribution's config.yml. Access logs go to stdout
// (one combined-log line per request), the application log to stderr.
func registryConfig(addr, storage string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
`, storage, addr)
}

func startRegistryOnce(ctx context.Context, o RegistryOptions, dir string) (*Registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(registryConfig(addr, filepath.Join(dir, "storage"))), 0o644); err != nil {
		return nil, fmt.Errorf("writing registry config: %w", err)
	}
	r := &Registry{addr: addr, dir: dir, exited: make(chan struct{})}
	if err := r.start(o.Binary, cfgPath); err != nil {
		return nil, err
	}
	if err := r.waitReady(ctx, o.ReadyTimeout); err != nil {
		_ = r.stopProcess()
		return nil, err
	}
	return r, nil
}

func (r *Registry) start(bin, cfgPath string) error {
	access, err := os.OpenFile(r.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("creating the registry access log: %w", err)
	}
	applog, err := os.OpenFile(r.AppLogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		access.Close()
		return fmt.Errorf("creating the registry log: %w", err)
	}
	r.files = []*os.File{access, applog}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = access, applog
	// Tracing is always on in distribution v3; without this it exports
	// spans over OTLP to localhost:4318 and logs a failure for each batch.
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	if err := cmd.Start(); err != nil {
		r.closeFiles()
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	r.cmd = cmd
	go func() { r.waitErr = cmd.Wait(); close(r.exited) }()
	return nil
}

// waitReady polls GET /v2/ until it answers 200, the process exits, the
// timeout passes or ctx is done.
func (r *Registry) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if registryAnswers(ctx, client, "http://"+r.addr+"/v2/") {
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("registry exited before answering on %s (%v); its log:\n%s", r.addr, r.waitErr, tail(r.AppLogPath(), 20))
		case <-ctx.Done():
			return fmt.Errorf("waiting for the registry on %s: %w; its log:\n%s", r.addr, ctx.Err(), tail(r.AppLogPath(), 20))
		case <-tick.C:
		}
	}
}

func registryAnswers(ctx context.Context, c *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Addr is host:port of the registry, e.g. 127.0.0.1:41234.
func (r *Registry) Addr() string { return r.addr }

// Dir is the directory holding config.yml, storage/ and the logs.
func (r *Registry) Dir() string { return r.dir }

// LogPath is the access log: one combined-log-format line per request.
func (r *Registry) LogPath() string { return filepath.Join(r.dir, "access.log") }

// AppLogPath is the registry's own log (startup, errors, per-request info).
func (r *Registry) AppLogPath() string { return filepath.Join(r.dir, "registry.log") }

// Request is one line of the access log.
type Request struct {
	Method string
	Path   string
	Status int
}

// Requests parses the access log written so far.
func (r *Registry) Requests() ([]Request, error) {
	f, err := os.Open(r.LogPath())
	if err != nil {
		return nil, fmt.Errorf("reading the registry access log: %w", err)
	}
	defer f.Close()
	var out []Request
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		if req, ok := parseAccessLine(s.Text()); ok {
			out = append(out, req)
		}
	}
	return out, s.Err()
}

// parseAccessLine reads the request line and status of a combined-log line:
// 127.0.0.1 - - [date] "PUT /v2/x/manifests/1.0 HTTP/1.1" 201 0 "" "ua".
func parseAccessLine(line string) (Request, bool) {
	i := strings.IndexByte(line, '"')
	if i < 0 {
		return Request{}, false
	}
	rest := line[i+1:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return Request{}, false
	}
	parts := strings.Fields(rest[:j])
	if len(parts) < 2 {
		return Request{}, false
	}
	var status int
	_, _ = fmt.Sscanf(strings.TrimSpace(rest[j+1:]), "%d", &status)
	return Request{Method: parts[0], Path: parts[1], Status: status}, true
}

// ManifestPuts counts PUT requests to /v2/<repo>/manifests/ so far.
func (r *Registry) ManifestPuts() (int, error) {
	reqs, err := r.Requests()
	n := 0
	for _, q := range reqs {
		if q.Method == http.MethodPut && strings.Contains(q.Path, "/manifests/") {
			n++
		}
	}
	return n, err
}

// Stop stops the registry and removes its directory unless told to keep it.
func (r *Registry) Stop() error {
	err := r.stopProcess()
	if !r.keep {
		if rmErr := os.RemoveAll(r.dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("removing the registry directory: %w", rmErr))
		}
	}
	return err
}

// stopProcess asks the registry to exit, and kills it after a grace period.
func (r *Registry) stopProcess() error {
	defer r.closeFiles()
	if r.cmd == nil {
		return nil
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
		return nil
	case <-time.After(5 * time.Second):
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing the registry: %w", err)
	}
	<-r.exited
	return nil
}

func (r *Registry) closeFiles() {
	for _, f := range r.files {
		_ = f.Close()
	}
	r.files = nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
