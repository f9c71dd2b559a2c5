package engine

import (
	"context"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/testkit"
)

// pushSingle pushes a one-layer image (not an index) with the given config platform.
func pushSingle(t *testing.T, ref string, p v1.Platform) {
	t.Helper()
	img, err := sandbox.RandomImage(256, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, ref), img); err != nil {
		t.Fatal(err)
	}
}

func TestSingleManifestBaseMustMatchTheRequestedPlatform(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	linux, win := reg.Host+"/lib/linux:1", reg.Host+"/windows/servercore:ltsc2022"
	pushSingle(t, linux, v1.Platform{OS: "linux", Architecture: "amd64"})
	pushSingle(t, win, v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2340"})
	layerURL := files.Put("/app.tar", testkit.Tar(t, testkit.File("app", "x")))
	tests := []struct {
		base, platform string
		want           string // "" when the build succeeds
	}{
		{linux, "windows/amd64", "base.platform windows/amd64 does not match the base image's platform linux/amd64"},
		{win, "linux/arm64", "base.platform linux/arm64 does not match the base image's platform windows/amd64:10.0.20348.2340"},
		{linux, "", ""},
		{linux, "linux/amd64", ""},
	}
	for _, tt := range tests {
		t.Run(tt.platform+" on "+tt.base, func(t *testing.T) {
			reg.Reset()
			ib := imageBuild("app", reg.Host+"/team/app:1", urlLayer("app", layerURL))
			ib.Spec.Base = &kilnv1.Base{Image: tt.base, Platform: tt.platform}
			res, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
			if tt.want == "" {
				if err != nil || res.Status.Base.Platform != "linux/amd64" {
					t.Fatalf("build: %v (status %+v)", err, res)
				}
				return
			}
			if failure.ReasonOf(err) != failure.PlatformNotFound || !failure.IsPermanent(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant permanent PlatformNotFound containing %q", err, tt.want)
			}
			if w := reg.Writes(); w != 0 {
				t.Errorf("%d registry writes for a refused base", w)
			}
		})
	}
}

// The engine's layer limits reach the base archive's decompression.
func TestBaseArchiveGetsTheLayerLimits(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	bomb := testkit.Gzip(t, testkit.Tar(t, testkit.File("x/layer.tar", strings.Repeat("\x00", 12<<20))))
	ib := imageBuild("app", reg.Host+"/team/app:1", urlLayer("app", files.Put("/app.tar", testkit.Tar(t, testkit.File("app", "x")))))
	ib.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: files.Put("/base.tar.gz", bomb)}}}
	for _, tc := range []struct {
		limits layer.Limits
		want   string
	}{
		{layer.Limits{MaxUncompressedBytes: 1 << 20}, "base.archive (archive url " + files.URL + "/base.tar.gz): member x/layer.tar: uncompressed size exceeds 1048576 bytes (limit MaxUncompressedBytes)"},
		{layer.Limits{MaxRatio: 50}, "decompresses to more than 50 times its compressed size"},
	} {
		e := newEngine(t, "")
		e.Limits = tc.limits
		_, err := e.Build(context.Background(), ib.DeepCopy(), Inputs{}, Options{})
		if failure.ReasonOf(err) != failure.LimitExceeded || !failure.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("err = %v\nwant permanent LimitExceeded containing %q", err, tc.want)
		}
		if tmps, err := e.Store.TempFiles(); err != nil || len(tmps) != 0 {
			t.Errorf("temp files left: %v %v", tmps, err)
		}
		if w := reg.Writes(); w != 0 {
			t.Errorf("%d registry writes for a refused base archive", w)
		}
	}
}
