package controllers

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gathered returns name{labels} -> value (counter, gauge, or histogram
// sample count) from reg.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestMetricsRegisterTwiceAndObserve(t *testing.T) {
	reg := prometheus.NewRegistry()
	m1, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := NewMetrics(reg)
	if err != nil {
		t.Fatalf("second registration: %v", err)
	}
	m1.observeBuild(resultPushed, 2*time.Second, 100, 40, 1)
	m2.observeBuild(resultUpToDate, time.Second, 10, 0, 2)
	m2.observeBuild(resultFailed, time.Second, 0, 0, 0)
	m2.buildStarted()
	got := gathered(t, reg)
	want := map[string]float64{
		"kiln_blob_cache_hits_total":                   3,
		"kiln_builds_in_flight":                        1,
		"kiln_layer_bytes_total{direction=in}":         110,
		"kiln_layer_bytes_total{direction=out}":        40,
		"kiln_build_duration_seconds{result=pushed}":   1,
		"kiln_build_duration_seconds{result=uptodate}": 1,
		"kiln_build_duration_seconds{result=failed}":   1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	var nilMetrics *Metrics
	nilMetrics.observeBuild(resultFailed, time.Second, 0, 0, 0) // must not panic
	nilMetrics.buildStarted()
	nilMetrics.buildDone()
}
