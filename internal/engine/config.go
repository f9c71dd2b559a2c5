package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/source"
)

// Config is what a process sets up once for all its builds: the cache, how
// sources and registries are reached and the bounds every build is held
// to. `kiln manager` and `kiln build`/`plan` both turn theirs into an
// Engine with NewEngine, so neither assembles engine internals itself.
type Config struct {
	// CacheDir is the blob store shared by all builds; NewEngine opens it.
	CacheDir string
	// CacheMaxBytes caps the blob store; 0 is unlimited.
	CacheMaxBytes int64
	// AllowedHosts, when set, is the only hosts URL sources may use; for
	// registry connections it only exempts hosts from the link-local and
	// metadata refusals (egress.RegistryPolicy). It replaces
	// Source.AllowedHosts.
	AllowedHosts []string
	// Source configures fetching (size cap, stall and rate limits, sleep).
	Source source.Options
	// Registry configures pulls, pushes and the controller's checks.
	Registry registry.Options
	// Limits bound every layer (uncompressed size, entries, header size,
	// compression ratio); zero fields take the layer package's defaults.
	Limits layer.Limits
	// BuildTimeout bounds each build; 0 is DefaultBuildTimeout, negative
	// is none.
	BuildTimeout time.Duration
	// BuilderID is the SLSA provenance builder.id; empty is
	// DefaultBuilderID(). A manager setting, never a spec field: a tenant
	// must not claim another builder.
	BuilderID string
}

// NewEngine opens the blob store of cfg and returns the Engine that every
// build of the process shares.
func NewEngine(cfg Config) (*Engine, error) {
	if cfg.CacheDir == "" {
		return nil, errors.New("a cache directory is required (--cache-dir or $KILN_CACHE_DIR)")
	}
	store, err := blobstore.Open(cfg.CacheDir, blobstore.Options{MaxBytes: cfg.CacheMaxBytes})
	if err != nil {
		return nil, fmt.Errorf("opening cache %s: %w", cfg.CacheDir, err)
	}
	src := cfg.Source
	if len(cfg.AllowedHosts) > 0 {
		src.AllowedHosts = cfg.AllowedHosts
	}
	return &Engine{
		Store:        store,
		Source:       src,
		Registry:     cfg.Registry,
		Limits:       cfg.Limits,
		BuildTimeout: cfg.BuildTimeout,
		BuilderID:    cfg.BuilderID,
	}, nil
}
