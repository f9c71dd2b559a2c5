package cli

import (
	"os"
	"path/filepath"
	"testing"
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
