package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`

// TestRestConfigRateLimitsAreTheSameForEveryLoader: --kubeconfig FILE used
// to keep client-go's 5 QPS / burst 10 while the default chain had no
// client-side limit.
func TestRestConfigRateLimitsAreTheSameForEveryLoader(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(file, []byte(testKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	// The default chain reads $KUBECONFIG first (there is no in-cluster
	// config here).
	t.Setenv("KUBECONFIG", file)
	for _, limits := range []rateLimits{
		{QPS: DefaultKubeAPIQPS, Burst: DefaultKubeAPIBurst},
		{QPS: 50, Burst: 75},
	} {
		for _, path := range []string{file, ""} {
			cfg, err := restConfig(path, limits)
			if err != nil {
				t.Fatalf("kubeconfig %q: %v", path, err)
			}
			if cfg.QPS != limits.QPS || cfg.Burst != limits.Burst {
				t.Errorf("kubeconfig %q: QPS %v burst %d, want %v and %d", path, cfg.QPS, cfg.Burst, limits.QPS, limits.Burst)
			}
			if cfg.Host != "https://127.0.0.1:6443" {
				t.Errorf("kubeconfig %q: host %q: not loaded from the file", path, cfg.Host)
			}
		}
	}
}

func TestManagerFlagsDefaultToTheSharedRateLimits(t *testing.T) {
	f := NewManagerCmd().Flags()
	for name, want := range map[string]string{"kube-api-qps": "-1", "kube-api-burst": "100"} {
		if got := f.Lookup(name); got == nil || got.DefValue != want {
			t.Errorf("--%s default %v, want %s", name, got, want)
		}
	}
}

func TestParseWatchLabelSelector(t *testing.T) {
	for _, tc := range []struct {
		in        string
		canonical string // "" with ok: no selector
		matches   map[string]string
		misses    map[string]string
	}{
		{in: ""},
		{in: "  "},
		{in: "sharding.kiln.dev/key=shard1", canonical: "sharding.kiln.dev/key=shard1",
			matches: map[string]string{"sharding.kiln.dev/key": "shard1"}, misses: map[string]string{"sharding.kiln.dev/key": "shard2"}},
		{in: "!sharding.kiln.dev/key", canonical: "!sharding.kiln.dev/key",
			matches: map[string]string{"app": "x"}, misses: map[string]string{"sharding.kiln.dev/key": "shard1"}},
		{in: "sharding.kiln.dev/key notin (shard2, shard1)", canonical: "sharding.kiln.dev/key notin (shard1,shard2)",
			matches: map[string]string{}, misses: map[string]string{"sharding.kiln.dev/key": "shard2"}},
	} {
		sel, err := parseWatchLabelSelector(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if tc.canonical == "" {
			if sel != nil {
				t.Errorf("%q: selector %v, want none", tc.in, sel)
			}
			continue
		}
		if sel.String() != tc.canonical {
			t.Errorf("%q: parsed as %q, want %q", tc.in, sel.String(), tc.canonical)
		}
		if tc.matches != nil && !sel.Matches(labels.Set(tc.matches)) {
			t.Errorf("%q does not match %v", tc.in, tc.matches)
		}
		if sel.Matches(labels.Set(tc.misses)) {
			t.Errorf("%q matches %v", tc.in, tc.misses)
		}
	}
}

// A selector typo stops `kiln manager` before it touches the cluster, and
// the error names the flag.
func TestManagerRejectsAnInvalidWatchLabelSelector(t *testing.T) {
	for _, bad := range []string{"sharding.kiln.dev/key shard1", "a=b=c", "key in (", "x,"} {
		cmd := NewManagerCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		// A kubeconfig that does not exist: reaching it would fail differently.
		cmd.SetArgs([]string{"--watch-label-selector=" + bad, "--kubeconfig=" + filepath.Join(t.TempDir(), "missing")})
		err := cmd.Execute()
		if err == nil {
			t.Fatalf("%q: manager started", bad)
		}
		if !strings.Contains(err.Error(), "--watch-label-selector") || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("%q: error %q does not name the flag and its value", bad, err)
		}
		if strings.Contains(err.Error(), "kubeconfig") {
			t.Errorf("%q: error %q: the kubeconfig was loaded before the selector was checked", bad, err)
		}
	}
}
