package controllers

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/build"
	"github.com/kiln-build/kiln/internal/cli"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/source"
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
	// MaxConcurrentBuilds is how many ImageBuilds build at once (default 4).
	MaxConcurrentBuilds int
	// CacheDir is the blob store shared by all builds.
	CacheDir string
	// CacheMaxBytes caps the blob store; 0 is unlimited.
	CacheMaxBytes int64
	// AllowedSourceHosts, when set, is the only hosts URL sources may use;
	// for registry connections it only exempts hosts from the link-local
	// and metadata refusals (egress.RegistryPolicy).
	AllowedSourceHosts []string
	Registry           registry.Options
	Source             source.Options
	// Limits bound every layer (uncompressed size, entries, header size,
	// compression ratio); zero fields take the engine defaults.
	Limits layer.Limits
	// BuildTimeout bounds each build (build.Engine.BuildTimeout); 0 is the
	// default, 2h.
	BuildTimeout time.Duration
}

// DefaultCacheDir is the blob store directory when neither --cache-dir nor
// $KILN_CACHE_DIR is given.
const DefaultCacheDir = "/var/cache/kiln"

// Client-side rate limits of the manager's API client, the same whether the
// config comes from --kubeconfig, $KUBECONFIG, ~/.kube/config or the pod's
// ServiceAccount. A negative QPS disables client-side limiting, as
// controller-runtime does for the configs it loads: API Priority and
// Fairness on the server is the limit. client-go's own default (5 QPS,
// burst 10) made 150 builds take 58 s instead of 17 s.
const (
	DefaultKubeAPIQPS   float32 = -1
	DefaultKubeAPIBurst int     = 100
)

// LeaderElectionID names the Lease the managers compete for.
const LeaderElectionID = "kiln-manager.kiln.dev"

// Run starts the manager and blocks until ctx is done.
func Run(ctx context.Context, cfg *rest.Config, o ManagerOptions) error {
	mgr, _, err := NewManager(ctx, cfg, o)
	if err != nil {
		return err
	}
	ctrl.LoggerFrom(ctx).Info("starting manager", "cacheDir", o.CacheDir, "maxConcurrentBuilds", o.MaxConcurrentBuilds)
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
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// Builds cancel on shutdown; a new leader must not wait for the
		// old one's lease to expire.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
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

func newReconciler(mgr manager.Manager, o ManagerOptions) (*ImageBuildReconciler, error) {
	if o.CacheDir == "" {
		return nil, errors.New("a cache directory is required (--cache-dir or $KILN_CACHE_DIR)")
	}
	store, err := blobstore.Open(o.CacheDir, blobstore.Options{MaxBytes: o.CacheMaxBytes})
	if err != nil {
		return nil, err
	}
	src := o.Source
	if len(o.AllowedSourceHosts) > 0 {
		src.AllowedHosts = o.AllowedSourceHosts
	}
	metrics, err := DefaultMetrics()
	if err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	return &ImageBuildReconciler{
		Client:              mgr.GetClient(),
		APIReader:           mgr.GetAPIReader(),
		MetadataReader:      mgr.GetCache(),
		Scheme:              mgr.GetScheme(),
		Engine:              &build.Engine{Store: store, Source: src, Registry: o.Registry, Limits: o.Limits, BuildTimeout: o.BuildTimeout},
		Recorder:            mgr.GetEventRecorder("kiln-manager"),
		Metrics:             metrics,
		MaxConcurrentBuilds: o.MaxConcurrentBuilds,
	}, nil
}

// NewManagerCmd returns `kiln manager`.
func NewManagerCmd() *cobra.Command {
	o := ManagerOptions{}
	var allowed, kubeconfig string
	limits := rateLimits{QPS: DefaultKubeAPIQPS, Burst: DefaultKubeAPIBurst}
	logOpts := zap.Options{}
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the ImageBuild controller",
		Long: "Run the ImageBuild controller against the cluster of the current kubeconfig " +
			"(or in-cluster config): it builds and pushes every ImageBuild and records the digests in status.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if allowed != "" {
				o.AllowedSourceHosts = splitList(allowed)
			}
			log := zap.New(zap.UseFlagOptions(&logOpts), zap.WriteTo(cmd.ErrOrStderr()))
			ctrl.SetLogger(log)
			cfg, err := restConfig(kubeconfig, limits)
			if err != nil {
				return fmt.Errorf("loading kubeconfig: %w", err)
			}
			ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), log)
			return Run(ctx, cfg, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "Path to a kubeconfig; default $KUBECONFIG, ~/.kube/config, or the in-cluster config.")
	f.Float32Var(&limits.QPS, "kube-api-qps", DefaultKubeAPIQPS, "Requests per second to the Kubernetes API (client-side); negative disables the client-side limit and leaves it to the API server's priority and fairness.")
	f.IntVar(&limits.Burst, "kube-api-burst", DefaultKubeAPIBurst, "Burst of requests to the Kubernetes API above --kube-api-qps (when it is positive).")
	f.BoolVar(&o.LeaderElection, "leader-elect", false, "Elect a leader so that only one manager builds at a time.")
	f.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	f.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8080", `Address of the Prometheus metrics endpoint; "0" disables it.`)
	f.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	f.IntVar(&o.MaxConcurrentBuilds, "max-concurrent-builds", 4, "How many ImageBuilds build at once.")
	f.StringVar(&o.CacheDir, "cache-dir", defaultCacheDir(), "Blob cache directory shared by all builds ($KILN_CACHE_DIR).")
	f.Int64Var(&o.CacheMaxBytes, "cache-max-bytes", 0, "Size cap of the blob cache; least recently used blobs are evicted. 0 is unlimited.")
	// The same limit flags as kiln build/plan: --max-source-bytes,
	// --source-read-timeout, --min-transfer-rate, --min-transfer-window,
	// --max-layer-bytes, --max-layer-entries, --max-compression-ratio,
	// --build-timeout.
	cli.BindLimitFlags(cmd, &o.Source, &o.Limits, &o.BuildTimeout)
	f.StringVar(&allowed, "allowed-source-hosts", "", "Comma-separated hosts URL sources may use; when empty any host except link-local and cloud metadata addresses. "+
		"Registries (base, target, blob sources, their token realms and redirects) are not confined to the list: for them it only exempts a listed link-local or metadata host from the refusal.")
	// controller-runtime's zap flags (--zap-devel, --zap-encoder,
	// --zap-log-level, --zap-stacktrace-level, --zap-time-encoding).
	gofs := flag.NewFlagSet("zap", flag.ContinueOnError)
	logOpts.BindFlags(gofs)
	f.AddGoFlagSet(gofs)
	return cmd
}

// rateLimits are the client-side limits of the API client.
type rateLimits struct {
	QPS   float32
	Burst int
}

// restConfig loads the given kubeconfig, or controller-runtime's default
// chain ($KUBECONFIG, in-cluster, ~/.kube/config) when path is empty, and
// sets the same rate limits on either: the two loaders default them
// differently (client-go 5 QPS, controller-runtime unlimited).
func restConfig(path string, limits rateLimits) (*rest.Config, error) {
	cfg, err := loadRestConfig(path)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = limits.QPS, limits.Burst
	return cfg, nil
}

func loadRestConfig(path string) (*rest.Config, error) {
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	return ctrl.GetConfig()
}

func defaultCacheDir() string {
	if d := os.Getenv("KILN_CACHE_DIR"); d != "" {
		return d
	}
	return DefaultCacheDir
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
