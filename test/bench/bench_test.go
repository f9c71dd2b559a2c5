package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []time.Duration
		want stats
	}{
		{[]time.Duration{3, 1, 2}, stats{Median: 2, Min: 1, Max: 3}},
		{[]time.Duration{4, 1, 3, 2}, stats{Median: 2, Min: 1, Max: 4}}, // (2+3)/2 truncated
		{[]time.Duration{5}, stats{Median: 5, Min: 5, Max: 5}},
		{nil, stats{}},
	} {
		if got := durationStats(tc.in); got != tc.want {
			t.Errorf("durationStats(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if got := medianInt([]int64{10, 30, 20, 40}); got != 25 {
		t.Errorf("medianInt = %d, want 25", got)
	}
}

func TestSelectCases(t *testing.T) {
	all := allCases()
	got := selectCases(all, []string{"limit-", "kiln-tar"})
	for _, c := range got {
		if c.kind != kindLimit && c.name != "kiln-tar" {
			t.Errorf("selected %s", c.name)
		}
	}
	if len(selectCases(all, nil)) != len(all) {
		t.Error("no filter must select every case")
	}
	if len(selectCases(all, []string{"none"})) != 0 {
		t.Error(`"none" must select nothing`)
	}
}

// The inputs are a cache keyed by generatorVersion: the same version must
// always give the same bytes.
func TestGeneratorDeterministic(t *testing.T) {
	sum := func() [32]byte {
		var b bytes.Buffer
		if err := writeApp(&b, true); err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b.Bytes())
	}
	if a, b := sum(), sum(); a != b {
		t.Fatalf("two generations differ: %x vs %x", a, b)
	}
}

func TestGeneratedTarIsValid(t *testing.T) {
	var b bytes.Buffer
	if err := writeApp(&b, true); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&b)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("entry %d: %v", n, err)
		}
		if !h.ModTime.Equal(epoch) {
			t.Fatalf("entry %q: mtime %v, want %v", h.Name, h.ModTime, epoch)
		}
		n++
	}
	if n < 100 {
		t.Fatalf("only %d entries", n)
	}
}

func TestRatio(t *testing.T) {
	if got := ratio(time.Second, 2*time.Second); got != "0.50×" {
		t.Errorf("ratio = %q", got)
	}
	if got := ratio(0, time.Second); got != "–" {
		t.Errorf("ratio with a missing side = %q", got)
	}
}
