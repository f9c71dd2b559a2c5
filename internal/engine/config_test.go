package engine

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/source"
)

func TestNewEngine(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		CacheDir:     dir,
		AllowedHosts: []string{"files.example"},
		Source:       source.Options{MaxBytes: 42, AllowedHosts: []string{"replaced.example"}},
		Limits:       layer.Limits{MaxEntries: 7},
		BuildTimeout: time.Minute,
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	if p := e.Store.Path(d); !strings.HasPrefix(p, filepath.Clean(dir)+string(filepath.Separator)) {
		t.Errorf("store path %s is not under the cache dir %s", p, dir)
	}
	if !slices.Equal(e.Source.AllowedHosts, cfg.AllowedHosts) || e.Source.MaxBytes != 42 {
		t.Errorf("source options = %+v, want AllowedHosts replaced and the rest kept", e.Source)
	}
	if e.Limits.MaxEntries != 7 || e.BuildTimeout != time.Minute {
		t.Errorf("limits %+v, timeout %s", e.Limits, e.BuildTimeout)
	}

	cfg.AllowedHosts = nil
	if e, err = NewEngine(cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.Source.AllowedHosts, []string{"replaced.example"}) {
		t.Errorf("without AllowedHosts: hosts %v, want Source.AllowedHosts kept", e.Source.AllowedHosts)
	}
	if _, err := NewEngine(Config{}); err == nil || !strings.Contains(err.Error(), "a cache directory is required") {
		t.Errorf("no cache dir: %v", err)
	}
}
