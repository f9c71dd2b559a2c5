package engine

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/testkit"
)

func TestTagBase(t *testing.T) {
	tests := []struct {
		name string
		base *kilnv1.Base
		want string
	}{
		{"no base", nil, ""},
		{"empty", &kilnv1.Base{}, ""},
		{"scratch", &kilnv1.Base{Image: kilnv1.ScratchImage}, ""},
		{"digest", &kilnv1.Base{Image: "reg.example/base@sha256:" + strings.Repeat("a", 64)}, ""},
		{"archive", &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: "https://files.example/base.tar"}}}, ""},
		{"invalid", &kilnv1.Base{Image: "Not A Reference!!"}, ""},
		{"tag", &kilnv1.Base{Image: "reg.example/base:1"}, "reg.example/base:1"},
		{"implicit latest", &kilnv1.Base{Image: "reg.example/base"}, "reg.example/base"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TagBase(&kilnv1.ImageBuildSpec{Base: tt.base}); got != tt.want {
				t.Errorf("TagBase = %q, want %q", got, tt.want)
			}
		})
	}
}

// The base registry gets everything of the target's options but its
// insecure flag; the build and ResolveBase both use baseOptions.
func TestBaseOptionsDropOnlyTheInsecureFlag(t *testing.T) {
	kc := authn.NewMultiKeychain()
	o := registry.Options{Insecure: true, CABundle: []byte("pem"), Keychain: kc, Retries: 2, UserAgent: "kiln"}
	got := baseOptions(o)
	if got.Insecure || string(got.CABundle) != "pem" || got.Keychain != kc || got.Retries != 2 || got.UserAgent != "kiln" {
		t.Errorf("baseOptions = %+v", got)
	}
	if !o.Insecure {
		t.Error("baseOptions changed its argument")
	}
}

func pushRandom(t *testing.T, ref string) v1.Hash {
	t.Helper()
	img, err := sandbox.RandomImage(64, v1.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, ref), img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestResolveBaseFollowsTheTagWithOneHead(t *testing.T) {
	reg := testkit.NewRegistry(t)
	ref := reg.Host + "/base:stable"
	spec := &kilnv1.ImageBuildSpec{Base: &kilnv1.Base{Image: ref}, Target: kilnv1.Target{Image: reg.Host + "/app:1"}}
	e := newEngine(t, "")
	for range 2 { // the second time after the tag moved
		want := pushRandom(t, ref)
		reg.Reset()
		got, err := e.ResolveBase(context.Background(), spec, Inputs{})
		if err != nil {
			t.Fatal(err)
		}
		if got != (BaseRef{Image: ref, Digest: want.String()}) {
			t.Errorf("ResolveBase = %+v, want digest %s", got, want)
		}
		if n, gets := reg.Count("HEAD manifest"), reg.Count("GET manifest"); n != 1 || gets != 0 {
			t.Errorf("%d manifest HEADs and %d GETs, want one HEAD", n, gets)
		}
	}
	spec.Base.Image = kilnv1.ScratchImage
	if got, err := e.ResolveBase(context.Background(), spec, Inputs{}); err != nil || got != (BaseRef{}) {
		t.Errorf("scratch base: %+v, %v; want nothing to poll", got, err)
	}
}

func TestTargetHolds(t *testing.T) {
	reg := testkit.NewRegistry(t)
	target := reg.Host + "/app:1"
	pushed := pushRandom(t, target)
	e := newEngine(t, "")
	spec := &kilnv1.ImageBuildSpec{Target: kilnv1.Target{Image: target}}
	tests := []struct {
		name   string
		digest string
		want   bool
	}{
		{"pushed digest", pushed.String(), true},
		{"other digest", "sha256:" + strings.Repeat("0", 64), false},
		{"corrupt status digest", "sha256:nope", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			held, err := e.TargetHolds(context.Background(), spec, Inputs{}, tt.digest)
			if err != nil || held != tt.want {
				t.Errorf("TargetHolds = %v, %v; want %v", held, err, tt.want)
			}
		})
	}
}

// A check must not retry like a build: a registry that keeps failing costs
// the controller checkRetries+1 requests per check, not the build's budget.
func TestChecksRetryOnce(t *testing.T) {
	reg := testkit.NewRegistry(t)
	var failed atomic.Int32
	fail := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/" {
			return false
		}
		failed.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}
	reg.SetFault(fail)
	spec := &kilnv1.ImageBuildSpec{Base: &kilnv1.Base{Image: reg.Host + "/base:1"}, Target: kilnv1.Target{Image: reg.Host + "/app:1"}}
	e := newEngine(t, "") // Registry.Retries 3: the check must not use it
	checks := map[string]func() error{
		"TargetHolds": func() error {
			_, err := e.TargetHolds(context.Background(), spec, Inputs{}, "sha256:"+strings.Repeat("0", 64))
			return err
		},
		"ResolveBase": func() error {
			_, err := e.ResolveBase(context.Background(), spec, Inputs{})
			return err
		},
	}
	for name, check := range checks {
		t.Run(name, func(t *testing.T) {
			failed.Store(0)
			if err := check(); err == nil || !strings.Contains(err.Error(), "503") {
				t.Fatalf("error = %v, want the 503", err)
			}
			if n := int(failed.Load()); n != checkRetries+1 {
				t.Errorf("%d requests, want %d", n, checkRetries+1)
			}
		})
	}
}
