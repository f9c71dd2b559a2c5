package controllers

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Build results, the values of kiln_build_duration_seconds{result}.
const (
	resultPushed   = "pushed"
	resultUpToDate = "uptodate"
	resultFailed   = "failed"
)

// Metrics are the Prometheus collectors of the ImageBuild controller.
type Metrics struct {
	BuildDuration *prometheus.HistogramVec
	LayerBytes    *prometheus.CounterVec
	CacheHits     prometheus.Counter
	InFlight      prometheus.Gauge
	// Queued counts builds waiting for a build slot (not the running ones).
	Queued prometheus.Gauge
}

// NewMetrics creates the collectors and registers them on reg (normally
// controller-runtime's metrics.Registry, served by the manager). Registering
// twice in one process (several managers, tests) reuses the collectors that
// are already there instead of failing.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		BuildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kiln_build_duration_seconds",
			Help: "Duration of ImageBuild builds, by result (pushed, uptodate, failed).",
			// 100ms .. ~27min: a cached rebuild to a large cold rootfs.
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 15),
		}, []string{"result"}),
		LayerBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_layer_bytes_total",
			Help: "Bytes fetched from layer sources (direction=in) and uploaded to registries (direction=out).",
		}, []string{"direction"}),
		CacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_blob_cache_hits_total",
			Help: "Layers taken from the blob cache without fetching or encoding them again.",
		}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_builds_in_flight",
			Help: "Builds running now.",
		}),
		Queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_builds_queued",
			Help: "Builds waiting for a build slot (--max-concurrent-builds).",
		}),
	}
	var err error
	if m.BuildDuration, err = register(reg, m.BuildDuration); err != nil {
		return nil, err
	}
	if m.LayerBytes, err = register(reg, m.LayerBytes); err != nil {
		return nil, err
	}
	if m.CacheHits, err = register(reg, m.CacheHits); err != nil {
		return nil, err
	}
	if m.InFlight, err = register(reg, m.InFlight); err != nil {
		return nil, err
	}
	if m.Queued, err = register(reg, m.Queued); err != nil {
		return nil, err
	}
	return m, nil
}

// DefaultMetrics registers the collectors on controller-runtime's registry.
func DefaultMetrics() (*Metrics, error) { return NewMetrics(ctrlmetrics.Registry) }

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// observeBuild records one finished build. A nil m records nothing, so a
// reconciler built by hand in a test needs no registry.
func (m *Metrics) observeBuild(result string, d time.Duration, bytesIn, bytesOut int64, cacheHits int) {
	if m == nil {
		return
	}
	m.BuildDuration.WithLabelValues(result).Observe(d.Seconds())
	m.LayerBytes.WithLabelValues("in").Add(float64(bytesIn))
	m.LayerBytes.WithLabelValues("out").Add(float64(bytesOut))
	m.CacheHits.Add(float64(cacheHits))
}

func (m *Metrics) buildStarted() {
	if m != nil {
		m.InFlight.Inc()
	}
}

func (m *Metrics) buildDone() {
	if m != nil {
		m.InFlight.Dec()
	}
}
