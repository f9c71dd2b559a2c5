package image

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/testkit"
)

// pushIndex pushes an index with one small image per platform.
func pushIndex(t *testing.T, reg *testkit.Registry, repo string, plats ...string) (map[string]v1.Hash, v1.Hash) {
	t.Helper()
	idx := testkit.PushIndex(t, reg.Host+"/"+repo, testkit.IndexOptions{}, plats...)
	return idx.Children, idx.Digest
}

func TestFromRegistryIndexPicksPlatform(t *testing.T) {
	reg := testkit.NewRegistry(t)
	digests, idxDigest := pushIndex(t, reg, "lib/multi:1", "linux/amd64", "linux/arm64/v8")
	ctx := context.Background()
	ref := reg.Host + "/lib/multi:1"

	b, err := FromRegistry(ctx, ref, v1.Platform{OS: "linux", Architecture: "arm64"}, remoteOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	if b.Digest != digests["linux/arm64/v8"] || b.RefDigest != idxDigest || b.Platform.Architecture != "arm64" {
		t.Fatalf("base %+v", b)
	}
	head, err := HeadDigest(ctx, ref, remoteOpts()...)
	if err != nil || head != b.RefDigest {
		t.Fatalf("HeadDigest = %s, %v; want %s", head, err, b.RefDigest)
	}

	_, err = FromRegistry(ctx, ref, v1.Platform{OS: "linux", Architecture: "s390x"}, remoteOpts()...)
	want := "base " + ref + " has no linux/s390x image; it has: linux/amd64, linux/arm64/v8"
	if failure.ReasonOf(err) != failure.PlatformNotFound || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestFromRegistryWindowsOSVersionPrefix(t *testing.T) {
	reg := testkit.NewRegistry(t)
	digests, _ := pushIndex(t, reg, "win/base:ltsc", "windows/amd64:10.0.17763.5122", "windows/amd64:10.0.20348.2113")
	ctx := context.Background()
	ref := reg.Host + "/win/base:ltsc"
	for _, tc := range []struct{ want, pick string }{
		{"windows/amd64:10.0.20348", "windows/amd64:10.0.20348.2113"},
		{"windows/amd64:10.0.17763", "windows/amd64:10.0.17763.5122"},
		{"windows/amd64", "windows/amd64:10.0.17763.5122"}, // first in index order
	} {
		p, _ := ParsePlatform(tc.want)
		b, err := FromRegistry(ctx, ref, p, remoteOpts()...)
		if err != nil {
			t.Fatal(err)
		}
		if b.Digest != digests[tc.pick] || !b.Windows() {
			t.Errorf("%s picked %s, want %s", tc.want, b.Digest, tc.pick)
		}
	}
	p, _ := ParsePlatform("windows/amd64:10.0.2")
	_, err := FromRegistry(ctx, ref, p, remoteOpts()...)
	if failure.ReasonOf(err) != failure.PlatformNotFound {
		t.Fatalf("10.0.2 must not prefix-match 10.0.20348: %v", err)
	}
}

func TestFromRegistryErrors(t *testing.T) {
	reg := testkit.NewRegistry(t)
	ctx := context.Background()
	_, err := FromRegistry(ctx, reg.Host+"/lib/missing:1", DefaultPlatform, remoteOpts()...)
	if failure.ReasonOf(err) != failure.BaseNotFound {
		t.Fatalf("missing base: %v", err)
	}
	_, err = FromRegistry(ctx, "UPPER/Case:x", DefaultPlatform, remoteOpts()...)
	if failure.ReasonOf(err) != failure.InvalidSpec {
		t.Fatalf("bad reference: %v", err)
	}
	_, err = HeadDigest(ctx, reg.Host+"/lib/missing:1", remoteOpts()...)
	if failure.ReasonOf(err) != failure.BaseNotFound {
		t.Fatalf("HeadDigest of a missing base: %v", err)
	}
	if reg.Count("PUT manifest")+reg.Count("POST blobs") != 0 {
		t.Fatal("resolving a base wrote to the registry")
	}
	_ = http.MethodGet
}

// pushImage pushes one small image whose config has platform ps.
func pushImage(t *testing.T, reg *testkit.Registry, repo, ps string) string {
	t.Helper()
	p, err := ParsePlatform(ps)
	if err != nil {
		t.Fatal(err)
	}
	img, err := sandbox.RandomImage(100, p)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(reg.Host + "/" + repo)
	if err := remote.Write(ref, img, remoteOpts()...); err != nil {
		t.Fatal(err)
	}
	return ref.String()
}

func TestFromRegistrySingleImagePlatformMustMatch(t *testing.T) {
	reg := testkit.NewRegistry(t)
	linux := pushImage(t, reg, "lib/linux:1", "linux/amd64")
	win := pushImage(t, reg, "win/base:1", "windows/amd64:10.0.20348.2340")
	arm := pushImage(t, reg, "lib/arm:1", "linux/arm64/v8")
	tests := []struct {
		ref, platform string
		err           string // "" when the base resolves
	}{
		{linux, "", ""},
		{win, "", ""},
		{linux, "linux/amd64", ""},
		{arm, "linux/arm64", ""},
		{win, "windows/amd64:10.0.20348", ""},
		{linux, "windows/amd64", "base " + linux + ": base.platform windows/amd64 does not match the base image's platform linux/amd64"},
		{win, "linux/arm64", "base " + win + ": base.platform linux/arm64 does not match the base image's platform windows/amd64:10.0.20348.2340"},
		{win, "windows/amd64:10.0.17763", "base.platform windows/amd64:10.0.17763 does not match the base image's platform windows/amd64:10.0.20348.2340"},
	}
	for _, tt := range tests {
		p, err := ParsePlatform(tt.platform)
		if err != nil {
			t.Fatal(err)
		}
		b, err := FromRegistry(context.Background(), tt.ref, p, remoteOpts()...)
		if tt.err == "" {
			if err != nil || b.Digest.Hex == "" {
				t.Errorf("%s with platform %q: %v", tt.ref, tt.platform, err)
			}
			continue
		}
		if failure.ReasonOf(err) != failure.PlatformNotFound || err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s with platform %q: err = %v\nwant PlatformNotFound containing %q", tt.ref, tt.platform, err, tt.err)
		}
	}
}

func TestFromRegistryIndexWithoutPlatformIsDefault(t *testing.T) {
	reg := testkit.NewRegistry(t)
	digests, _ := pushIndex(t, reg, "lib/multi:1", "linux/arm64/v8", "linux/amd64")
	b, err := FromRegistry(context.Background(), reg.Host+"/lib/multi:1", v1.Platform{}, remoteOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	if b.Digest != digests["linux/amd64"] {
		t.Errorf("no platform picked %s, want the linux/amd64 child %s", b.Digest, digests["linux/amd64"])
	}
}
