package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
)

// LinuxBasePath is the PATH of the synthetic Debian-like base, so a sample's
// "/app/bin:$PATH" has something to expand.
const LinuxBasePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// WindowsBaseOSVersion is the os.version of the synthetic Windows base the
// windows sample selects by prefix (10.0.20348 = Windows Server 2022).
const WindowsBaseOSVersion = "10.0.20348.1"

// gzipLayer turns generated entries into an OCI gzip layer whose blob is
// exactly our deterministic gzip bytes (tarball keeps compressed input as is).
func gzipLayer(es []testkit.Entry) (v1.Layer, error) {
	t, err := writeTar(es)
	if err != nil {
		return nil, err
	}
	gz, err := gzipBytes(t)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// baseImage is an OCI image of one layer with cfg's OS, platform and env.
func baseImage(layer v1.Layer, cfg v1.ConfigFile, createdBy string) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg.Created = v1.Time{Time: testkit.Time}
	img, err := mutate.ConfigFile(img, &cfg)
	if err != nil {
		return nil, fmt.Errorf("setting base config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: testkit.Time}, CreatedBy: createdBy},
	})
	if err != nil {
		return nil, fmt.Errorf("appending base layer: %w", err)
	}
	return img, nil
}

// LinuxBase is a small linux/amd64 "debian" base: one layer, env PATH.
func LinuxBase() (v1.Image, error) {
	layer, err := gzipLayer([]testkit.Entry{
		testkit.Dir("bin/"),
		testkit.Dir("etc/"),
		testkit.File("etc/debian_version", "12.8\n"),
		testkit.File("etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n"),
		testkit.Dir("tmp/").WithMode(0o1777),
		testkit.Dir("usr/"),
		testkit.Dir("usr/bin/"),
		testkit.Dir("usr/lib/"),
	})
	if err != nil {
		return nil, fmt.Errorf("building the linux base layer: %w", err)
	}
	return baseImage(layer, v1.ConfigFile{
		OS: "linux", Architecture: "amd64",
		Config: v1.Config{Env: []string{"PATH=" + LinuxBasePath}, Cmd: []string{"bash"}},
	}, "kiln sandbox: debian-like base")
}

// windowsBaseImage is a Windows image with the Files/ + Hives/ layer layout.
func windowsBaseImage(osVersion string) (v1.Image, error) {
	layer, err := gzipLayer([]testkit.Entry{
		testkit.Dir("Files/"),
		testkit.Dir("Files/Windows/"),
		testkit.Dir("Files/Windows/System32/"),
		testkit.File("Files/Windows/System32/cmd.exe", string(append([]byte("MZ\x90\x00"), pseudoBinary(4, 16<<10)...))).WithMode(0o755),
		testkit.Dir("Hives/"),
		testkit.File("Hives/DefaultUser_Delta", "regf"),
		testkit.File("Hives/Software_Delta", "regf"),
		testkit.File("Hives/System_Delta", "regf"),
	})
	if err != nil {
		return nil, fmt.Errorf("building the windows base layer: %w", err)
	}
	return baseImage(layer, v1.ConfigFile{
		OS: "windows", Architecture: "amd64", OSVersion: osVersion,
		Config: v1.Config{Cmd: []string{"c:\\windows\\system32\\cmd.exe"}, User: "ContainerUser"},
	}, "kiln sandbox: nanoserver-like base "+osVersion)
}

// WindowsBase is an index like nanoserver's: a windows/amd64 child with
// os.version WindowsBaseOSVersion, plus an older (ltsc2019) child so that
// selecting by os.version prefix matters.
func WindowsBase() (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, v := range []string{WindowsBaseOSVersion, "10.0.17763.1"} {
		img, err := windowsBaseImage(v)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{
				OS: "windows", Architecture: "amd64", OSVersion: v,
			}},
		})
	}
	return idx, nil
}

// PushBases pushes a synthetic base for every distinct non-scratch
// spec.base.image of builds (already rewritten to the local registry): the
// Windows index when the build's platform is windows/..., the Linux image
// otherwise. It returns the references pushed.
func PushBases(ctx context.Context, builds []*kilnv1.ImageBuild, opts ...remote.Option) ([]string, error) {
	var pushed []string
	seen := map[string]bool{}
	for _, ib := range builds {
		b := ib.Spec.Base
		if b == nil || b.Image == "" || b.Image == "scratch" || seen[b.Image] {
			continue
		}
		seen[b.Image] = true
		if err := pushBase(ctx, b.Image, strings.HasPrefix(b.Platform, "windows/"), opts); err != nil {
			return pushed, fmt.Errorf("pushing base %s for %s: %w", b.Image, ib.Name, err)
		}
		pushed = append(pushed, b.Image)
	}
	return pushed, nil
}

func pushBase(ctx context.Context, image string, windows bool, opts []remote.Option) error {
	ref, err := name.ParseReference(image)
	if err != nil {
		return fmt.Errorf("parsing %q: %w", image, err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	if windows {
		idx, err := WindowsBase()
		if err != nil {
			return err
		}
		return remote.WriteIndex(ref, idx, opts...)
	}
	img, err := LinuxBase()
	if err != nil {
		return err
	}
	return remote.Write(ref, img, opts...)
}

// RandomImage is a one-layer image of random bytes (size per layer) whose
// config names platform p: the test bases of every package that needs a
// single image of some platform.
func RandomImage(size int64, p v1.Platform) (v1.Image, error) {
	img, err := random.Image(size, 1)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = p.OS, p.Architecture, p.Variant, p.OSVersion
	return mutate.ConfigFile(img, cf)
}
