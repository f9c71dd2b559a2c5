package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kiln-build/kiln/controllers"
)

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

// NewManagerCmd returns `kiln manager`.
func NewManagerCmd() *cobra.Command {
	o := controllers.ManagerOptions{}
	var allowed, kubeconfig, watchSelector string
	limits := rateLimits{QPS: DefaultKubeAPIQPS, Burst: DefaultKubeAPIBurst}
	logOpts := zap.Options{}
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the ImageBuild controller",
		Long: "Run the ImageBuild controller against the cluster of the current kubeconfig " +
			"(or in-cluster config): it builds and pushes every ImageBuild and records the digests in status.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := parseWatchLabelSelector(watchSelector)
			if err != nil {
				return err
			}
			o.WatchLabelSelector = sel
			if allowed != "" {
				o.Engine.AllowedHosts = splitList(allowed)
			}
			log := zap.New(zap.UseFlagOptions(&logOpts), zap.WriteTo(cmd.ErrOrStderr()))
			ctrl.SetLogger(log)
			cfg, err := restConfig(kubeconfig, limits)
			if err != nil {
				return fmt.Errorf("loading kubeconfig: %w", err)
			}
			ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), log)
			return controllers.Run(ctx, cfg, o)
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
	f.StringVar(&watchSelector, watchLabelSelectorFlag, "", "Reconcile only the ImageBuilds whose labels match this selector, e.g. 'sharding.kiln.dev/key=shard1' for a shard "+
		"and '!sharding.kiln.dev/key' for the main instance; the leader-election Lease is named after it, so several shards run side by side. Default: every ImageBuild.")
	f.IntVar(&o.MaxConcurrentBuilds, "max-concurrent-builds", controllers.DefaultMaxConcurrentBuilds, "How many ImageBuilds build at once (the build slots; waiting builds show Reconciling=True reason Queued).")
	f.IntVar(&o.MaxConcurrentReconciles, "concurrent", controllers.DefaultMaxConcurrentReconciles, "Reconcile workers: status updates, target verification and base polls. They never wait for a build slot.")
	f.StringVar(&o.Engine.CacheDir, "cache-dir", managerCacheDir(), "Blob cache directory shared by all builds ($KILN_CACHE_DIR).")
	f.Int64Var(&o.Engine.CacheMaxBytes, "cache-max-bytes", 0, "Size cap of the blob cache; least recently used blobs are evicted. 0 is unlimited.")
	// The same limit flags as kiln build/plan: --max-source-bytes,
	// --source-read-timeout, --min-transfer-rate, --min-transfer-window,
	// --max-layer-bytes, --max-layer-entries, --max-compression-ratio,
	// --build-timeout.
	BindLimitFlags(cmd, &o.Engine.Source, &o.Engine.Limits, &o.Engine.BuildTimeout)
	f.StringVar(&o.Engine.BuilderID, "provenance-builder-id", "", "builder.id of the SLSA provenance kiln attaches (spec.attestations.provenance); default https://kiln.dev/kiln@<version>. Name this installation, e.g. https://kiln.example.com/cluster-a.")
	f.StringVar(&allowed, "allowed-source-hosts", "", "Comma-separated hosts URL sources may use; when empty any host except link-local and cloud metadata addresses. "+
		"Registries (base, target, blob sources, their token realms and redirects) are not confined to the list: for them it only exempts a listed link-local or metadata host from the refusal.")
	// controller-runtime's zap flags (--zap-devel, --zap-encoder,
	// --zap-log-level, --zap-stacktrace-level, --zap-time-encoding).
	gofs := flag.NewFlagSet("zap", flag.ContinueOnError)
	logOpts.BindFlags(gofs)
	f.AddGoFlagSet(gofs)
	return cmd
}

const watchLabelSelectorFlag = "watch-label-selector"

// parseWatchLabelSelector parses --watch-label-selector (Kubernetes label
// selector syntax, labels.Parse); "" selects every ImageBuild. A typo must
// stop the manager at startup: running with a selector that means
// something else would silently leave a shard's ImageBuilds unbuilt.
func parseWatchLabelSelector(s string) (labels.Selector, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: %w", watchLabelSelectorFlag, s, err)
	}
	return sel, nil
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

// managerCacheDir is $KILN_CACHE_DIR, else the manager image's cache volume.
func managerCacheDir() string {
	if d := os.Getenv("KILN_CACHE_DIR"); d != "" {
		return d
	}
	return controllers.DefaultCacheDir
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
