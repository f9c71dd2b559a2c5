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
	return LinuxBaseFor(v1.Platform{OS: "linux", Architecture: "amd64"})
}

// LinuxBaseFor is LinuxBase for another Linux platform: the same tree,
// with the platform in its config and in etc/kiln-arch.
func LinuxBaseFor(p v1.Platform) (v1.Image, error) {
	layer, err := gzipLayer([]testkit.Entry{
		testkit.Dir("bin/"),
		testkit.Dir("etc/"),
		testkit.File("etc/debian_version", "12.8\n"),
		testkit.File("etc/kiln-arch", p.Architecture+"\n"),
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
		OS: "linux", Architecture: p.Architecture, Variant: p.Variant,
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

// PushBases pushes a synthetic base for every distinct non-scratch base
// image of builds (spec.base and platforms[].base, already rewritten to the
// local registry): the Windows index for a base used with windows/...
// platforms, an index of Linux images for a base a multi-platform build
// uses, the single Linux image otherwise. It returns the references pushed.
func PushBases(ctx context.Context, builds []*kilnv1.ImageBuild, opts ...remote.Option) ([]string, error) {
	uses := map[string][]string{}
	var order []string
	use := func(image, platform string) {
		if image == "" || image == "scratch" {
			return
		}
		if _, ok := uses[image]; !ok {
			order = append(order, image)
		}
		uses[image] = append(uses[image], platform)
	}
	for _, ib := range builds {
		spec := &ib.Spec
		if len(spec.Platforms) == 0 && spec.Base != nil {
			use(spec.Base.Image, spec.Base.Platform)
		}
		for _, p := range spec.Platforms {
			if p.Base != nil {
				use(p.Base.Image, p.Platform)
			} else if spec.Base != nil {
				use(spec.Base.Image, p.Platform)
			}
		}
	}
	var pushed []string
	for _, image := range order {
		if err := pushBase(ctx, image, uses[image], opts); err != nil {
			return pushed, fmt.Errorf("pushing base %s: %w", image, err)
		}
		pushed = append(pushed, image)
	}
	return pushed, nil
}

func pushBase(ctx context.Context, image string, platforms []string, opts []remote.Option) error {
	ref, err := name.ParseReference(image)
	if err != nil {
		return fmt.Errorf("parsing %q: %w", image, err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	if strings.HasPrefix(platforms[0], "windows/") {
		idx, err := WindowsBase()
		if err != nil {
			return err
		}
		return remote.WriteIndex(ref, idx, opts...)
	}
	if len(platforms) == 1 && (platforms[0] == "" || platforms[0] == "linux/amd64") {
		img, err := LinuxBase()
		if err != nil {
			return err
		}
		return remote.Write(ref, img, opts...)
	}
	idx, err := linuxIndex(platforms)
	if err != nil {
		return err
	}
	return remote.WriteIndex(ref, idx, opts...)
}

// linuxIndex is an index of LinuxBaseFor images, one per distinct platform.
func linuxIndex(platforms []string) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	seen := map[string]bool{}
	for _, ps := range platforms {
		p, err := v1.ParsePlatform(ps)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", ps, err)
		}
		if seen[p.String()] {
			continue
		}
		seen[p.String()] = true
		img, err := LinuxBaseFor(*p)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	return idx, nil
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
