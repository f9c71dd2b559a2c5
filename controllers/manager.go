package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
)

// ManagerOptions configure `kiln manager`.
type ManagerOptions struct {
	// MetricsBindAddress serves Prometheus metrics; "0" disables.
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz; "0" disables.
	HealthProbeBindAddress string
	LeaderElection         bool
	// LeaderElectionNamespace defaults to the namespace the pod runs in.
	LeaderElectionNamespace string
	// MaxConcurrentBuilds is how many ImageBuilds build at once: the slots
	// of the build queue (default 4).
	MaxConcurrentBuilds int
	// WatchLabelSelector, when not empty, confines the manager to the
	// ImageBuilds whose labels match it (--watch-label-selector): a shard.
	// ConfigMaps, Secrets and ServiceAccounts are not filtered, they belong
	// to the ImageBuilds of whichever shard references them. The selector
	// also names the leader-election Lease (LeaseName), so that the
	// replicas of one shard elect one leader and shards do not block each
	// other.
	WatchLabelSelector labels.Selector
	// SkipControllerNameValidation lets several managers run in one process
	// (tests, benchmarks): controller-runtime refuses a second controller
	// named "imagebuild" otherwise. A deployed manager leaves it false.
	SkipControllerNameValidation bool
	// MaxConcurrentReconciles is the number of reconcile workers (default
	// 8); they never wait for a build slot.
	MaxConcurrentReconciles int
	// Engine configures the build engine all reconciles share: the cache
	// directory, allowed hosts, source and registry options, layer limits
	// and the build timeout (engine.NewEngine).
	Engine engine.Config
}

// DefaultCacheDir is the blob store directory when neither --cache-dir nor
// $KILN_CACHE_DIR is given.
const DefaultCacheDir = "/var/cache/kiln"

// LeaderElectionID names the Lease the managers of an unsharded
// installation compete for; a shard's Lease is LeaseName of its selector.
const LeaderElectionID = "kiln-manager.kiln.dev"

// LeaseName is the leader-election Lease of the managers that watch the
// ImageBuilds sel matches: LeaderElectionID for no selector, else
// LeaderElectionID-<first 8 hex digits of sha256(selector)>, the scheme of
// Flux's leaderelection.GenerateID. The selector is hashed in its canonical
// form (labels.Selector.String: requirements sorted), so two spellings of
// one shard's selector share one Lease.
func LeaseName(sel labels.Selector) string {
	if selects(sel) {
		sum := sha256.Sum256([]byte(sel.String()))
		return LeaderElectionID + "-" + hex.EncodeToString(sum[:])[:8]
	}
	return LeaderElectionID
}

// selects says whether sel restricts anything (nil and labels.Everything()
// do not).
func selects(sel labels.Selector) bool { return sel != nil && !sel.Empty() }

// Run starts the manager and blocks until ctx is done.
func Run(ctx context.Context, cfg *rest.Config, o ManagerOptions) error {
	mgr, _, err := NewManager(ctx, cfg, o)
	if err != nil {
		return err
	}
	ctrl.LoggerFrom(ctx).Info("starting manager", "cacheDir", o.Engine.CacheDir, "maxConcurrentBuilds", o.MaxConcurrentBuilds,
		"watchLabelSelector", watchedLabels(o.WatchLabelSelector), "leaderElection", o.LeaderElection, "lease", LeaseName(o.WatchLabelSelector))
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running manager: %w", err)
	}
	return nil
}

// NewScheme returns the scheme of the manager: client-go's types and kiln's.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := kilnv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// NewManager builds the manager and the reconciler (returned so tests and
// the demo can reach its engine) without starting it.
func NewManager(ctx context.Context, cfg *rest.Config, o ManagerOptions) (manager.Manager, *ImageBuildReconciler, error) {
	scheme, err := NewScheme()
	if err != nil {
		return nil, nil, fmt.Errorf("building scheme: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        LeaseName(o.WatchLabelSelector),
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// Builds cancel on shutdown; a new leader must not wait for the
		// old one's lease to expire.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cacheOptions(o.WatchLabelSelector),
		Controller:                    config.Controller{SkipNameValidation: &o.SkipControllerNameValidation},
		Client: client.Options{Cache: &client.CacheOptions{
			// Never cache ConfigMap or Secret bodies: their data is read with
			// direct GETs when a build needs it; only metadata is watched.
			DisableFor: []client.Object{&corev1.Secret{}, &corev1.ConfigMap{}},
		}},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("creating manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, nil, fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, nil, fmt.Errorf("adding ready check: %w", err)
	}
	r, err := newReconciler(mgr, o)
	if err != nil {
		return nil, nil, err
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return nil, nil, fmt.Errorf("setting up the ImageBuild controller: %w", err)
	}
	return mgr, r, nil
}

// cacheOptions strips managed fields from every cached object and, for a
// shard, lists and watches only the ImageBuilds its selector matches: the
// API server filters them, so a shard neither receives nor holds the other
// shards' objects, and every watch, index and map function of the
// controller sees only its own.
func cacheOptions(sel labels.Selector) cache.Options {
	o := cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
	if selects(sel) {
		o.ByObject = map[client.Object]cache.ByObject{&kilnv1.ImageBuild{}: {Label: sel}}
	}
	return o
}

// watchedLabels is the selector as the startup log shows it.
func watchedLabels(sel labels.Selector) string {
	if !selects(sel) {
		return "(all ImageBuilds)"
	}
	return sel.String()
}

func newReconciler(mgr manager.Manager, o ManagerOptions) (*ImageBuildReconciler, error) {
	engine, err := engine.NewEngine(o.Engine)
	if err != nil {
		return nil, err
	}
	metrics, err := DefaultMetrics()
	if err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	return &ImageBuildReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		MetadataReader:          mgr.GetCache(),
		Engine:                  engine,
		Recorder:                mgr.GetEventRecorder("kiln-manager"),
		Metrics:                 metrics,
		MaxConcurrentBuilds:     o.MaxConcurrentBuilds,
		MaxConcurrentReconciles: o.MaxConcurrentReconciles,
	}, nil
}
