package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// TestLeaseNameOfASelector pins the Lease names: a change would let an
// upgraded shard and its old replica both lead during a rollout. The hashes
// are sha256 of the selectors' canonical text, as Flux's GenerateID.
func TestLeaseNameOfASelector(t *testing.T) {
	for _, tc := range []struct {
		selector string
		want     string
	}{
		{"", "kiln-manager.kiln.dev"},
		{"sharding.kiln.dev/key=shard1", "kiln-manager.kiln.dev-34896ccf"},
		{"sharding.kiln.dev/key=shard2", "kiln-manager.kiln.dev-d2d77e4d"},
		{"!sharding.kiln.dev/key", "kiln-manager.kiln.dev-b5d1f851"},
	} {
		sel, err := labels.Parse(tc.selector)
		if err != nil {
			t.Fatal(err)
		}
		got := LeaseName(sel)
		if got != tc.want {
			t.Errorf("LeaseName(%q) = %q, want %q", tc.selector, got, tc.want)
		}
		if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
			t.Errorf("LeaseName(%q) = %q is not a valid Lease name: %v", tc.selector, got, errs)
		}
	}
	if got := LeaseName(nil); got != LeaderElectionID {
		t.Errorf("LeaseName(nil) = %q, want %q", got, LeaderElectionID)
	}
}

// Two spellings of one selector are one shard, so one Lease.
func TestLeaseNameIsTheSameForEquivalentSpellings(t *testing.T) {
	a, _ := labels.Parse("team=a,tier in (x,y)")
	b, _ := labels.Parse("tier in (y, x), team=a")
	if LeaseName(a) != LeaseName(b) {
		t.Errorf("LeaseName differs for one selector: %q vs %q", LeaseName(a), LeaseName(b))
	}
	c, _ := labels.Parse("team=b,tier in (x,y)")
	if LeaseName(a) == LeaseName(c) {
		t.Errorf("LeaseName is the same for different selectors: %q", LeaseName(a))
	}
}

// The cache filters only ImageBuilds: a shard must still see the
// ConfigMaps and Secrets its ImageBuilds reference, which carry no shard
// label.
func TestCacheOptionsFilterOnlyImageBuilds(t *testing.T) {
	if o := cacheOptions(nil); o.ByObject != nil || o.DefaultLabelSelector != nil {
		t.Errorf("no selector: cache options filter something: %+v", o)
	}
	sel, _ := labels.Parse("sharding.kiln.dev/key=shard1")
	o := cacheOptions(sel)
	if o.DefaultLabelSelector != nil {
		t.Errorf("DefaultLabelSelector = %v, want none (ConfigMaps and Secrets unfiltered)", o.DefaultLabelSelector)
	}
	if len(o.ByObject) != 1 {
		t.Fatalf("ByObject has %d entries, want only ImageBuild", len(o.ByObject))
	}
	for obj, by := range o.ByObject {
		if _, ok := obj.(*kilnv1.ImageBuild); !ok {
			t.Errorf("ByObject filters %T", obj)
		}
		if by.Label.String() != sel.String() {
			t.Errorf("ImageBuild selector %v, want %v", by.Label, sel)
		}
	}
	if o.DefaultTransform == nil {
		t.Error("managed fields are no longer stripped")
	}
}
