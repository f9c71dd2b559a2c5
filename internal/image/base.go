// Package image resolves base images (scratch, a registry reference, an
// image archive) and assembles the final image: one config and one manifest
// per build, whatever the spec sets.
package image

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/registry"
)

// Base is a resolved base image.
type Base struct {
	Image    v1.Image    // never nil; for scratch an empty image
	Name     string      // as given in the spec ("scratch", a reference, or "archive <source>")
	Digest   v1.Hash     // resolved manifest digest of the chosen image; zero for scratch
	Platform v1.Platform // of the chosen image (from its config)
	Scratch  bool

	// RefDigest is what the reference itself resolves to: the index digest
	// when the reference names an index (then Digest is the chosen child's),
	// otherwise equal to Digest. HeadDigest returns this value, so drift
	// polling compares HeadDigest with RefDigest. Zero for scratch and archives.
	RefDigest v1.Hash
	// RefMediaType is the media type of what the reference resolves to (an
	// index, a Docker manifest list or an image); empty for scratch and
	// archives. A multi-platform build on a Docker manifest list stays one.
	RefMediaType types.MediaType
	// Archive is set for a base loaded by FromArchive.
	Archive bool
	// Notes are facts about how the base was loaded, e.g. docker-save layers
	// compressed with gzip at load time.
	Notes []string

	releaseOnce sync.Once
	release     []func()
}

// Windows reports whether the base is a Windows image (config os == "windows").
func (b *Base) Windows() bool { return b.Platform.OS == "windows" }

// Release lets the blob store evict the blobs an archive base pinned. Call it
// once the build that uses the base has pushed (or failed). It is a no-op for
// other bases and safe to call more than once.
func (b *Base) Release() {
	b.releaseOnce.Do(func() {
		for _, r := range b.release {
			r()
		}
	})
}

// Scratch returns an empty OCI image for platform p (linux/amd64 when p is
// empty). os and architecture are always set: umoci refuses os "".
func Scratch(p v1.Platform) *Base {
	if p.OS == "" || p.Architecture == "" {
		p = DefaultPlatform
	}
	cf := &v1.ConfigFile{
		OS:           p.OS,
		Architecture: p.Architecture,
		Variant:      p.Variant,
		OSVersion:    p.OSVersion,
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{}},
	}
	raw, err := encodeConfig(cf)
	if err != nil {
		panic(err) // a fixed struct always encodes
	}
	img, err := newMemImage(types.OCIManifestSchema1, types.OCIConfigJSON, raw, nil, nil, nil)
	if err != nil {
		panic(err) // config and layers are consistent by construction
	}
	return &Base{Image: img, Name: "scratch", Platform: platformOf(cf), Scratch: true}
}

// FromRegistry resolves ref (tag or digest). When ref names an index the
// child matching p is chosen (DefaultPlatform when p is zero; for Windows,
// os.version by prefix when p has one). When ref names a single image, a
// non-zero p must match its config. Errors are classified with
// registry.Classify: not found is BaseNotFound, 401/403 Unauthorized; a
// missing platform is PlatformNotFound and names what the base has.
func FromRegistry(ctx context.Context, ref string, p v1.Platform, opts ...remote.Option) (*Base, error) {
	bs, err := FromRegistryPlatforms(ctx, ref, []v1.Platform{p}, opts...)
	if err != nil {
		return nil, err
	}
	return bs[0], nil
}

// FromRegistryPlatforms is FromRegistry for several platforms at once: ref
// is resolved once (one GET of the index), so that every platform's child
// comes from the same index even when its tag moves meanwhile. The bases
// are returned in the order of ps.
func FromRegistryPlatforms(ctx context.Context, ref string, ps []v1.Platform, opts ...remote.Option) ([]*Base, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, failure.Permanentf(failure.InvalidSpec, "base image %q is not a valid reference: %v", ref, err)
	}
	opts = append(opts, remote.WithContext(ctx))
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, registry.Classify(err, registry.AccessBase, "base "+ref)
	}
	out := make([]*Base, len(ps))
	for i, p := range ps {
		if out[i], err = baseOf(desc, ref, p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// baseOf is the base for p of the resolved reference desc.
func baseOf(desc *remote.Descriptor, ref string, p v1.Platform) (*Base, error) {
	b := &Base{Name: ref, RefDigest: desc.Digest, RefMediaType: desc.MediaType}
	img, digest, fromIndex, err := pickImage(desc, ref, p)
	if err != nil {
		return nil, err
	}
	b.Image, b.Digest = img, digest
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, registry.Classify(fmt.Errorf("reading the config of %s@%s: %w", ref, digest, err), registry.AccessBase, "base "+ref)
	}
	b.Platform = platformOf(cf)
	if !fromIndex {
		if err := checkSinglePlatform(ref, p, b.Platform); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// pickImage returns the image desc names, choosing the child for p when it
// is an index (fromIndex).
func pickImage(desc *remote.Descriptor, ref string, p v1.Platform) (img v1.Image, d v1.Hash, fromIndex bool, err error) {
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, v1.Hash{}, false, registry.Classify(err, registry.AccessBase, "base "+ref)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, v1.Hash{}, false, registry.Classify(err, registry.AccessBase, "base "+ref)
		}
		child, err := choosePlatform(im.Manifests, ref, p)
		if err != nil {
			return nil, v1.Hash{}, false, err
		}
		img, err := idx.Image(child.Digest)
		if err != nil {
			return nil, v1.Hash{}, false, registry.Classify(err, registry.AccessBase, "base "+ref)
		}
		return img, child.Digest, true, nil
	case desc.MediaType.IsSchema1():
		return nil, v1.Hash{}, false, failure.Permanentf(failure.InvalidSpec,
			"base %s uses the Docker schema 1 manifest format, which kiln does not support; re-push it with a current client", ref)
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, v1.Hash{}, false, registry.Classify(err, registry.AccessBase, "base "+ref)
		}
		return img, desc.Digest, false, nil
	default:
		return nil, v1.Hash{}, false, failure.Permanentf(failure.InvalidSpec,
			"base %s is a %s, not an image or an image index", ref, desc.MediaType)
	}
}

// choosePlatform picks the first image child of an index matching p
// (DefaultPlatform when p is zero). Children without a platform
// (attestations, "unknown/unknown") never match.
func choosePlatform(children []v1.Descriptor, ref string, p v1.Platform) (v1.Descriptor, error) {
	p = orDefault(p)
	var have []string
	for _, c := range children {
		if c.Platform == nil || !c.MediaType.IsImage() || c.Platform.OS == "unknown" {
			continue
		}
		if platformMatches(p, *c.Platform) {
			return c, nil
		}
		have = append(have, formatPlatform(*c.Platform))
	}
	return v1.Descriptor{}, errNoPlatform(ref, p, have)
}

func errNoPlatform(ref string, p v1.Platform, have []string) error {
	slices.Sort(have)
	list := strings.Join(slices.Compact(have), ", ")
	if list == "" {
		list = "no platform-specific images"
	}
	return failure.Permanentf(failure.PlatformNotFound,
		"base %s has no %s image; it has: %s", ref, formatPlatform(p), list)
}

// HeadDigest returns the digest ref currently resolves to, with a HEAD
// request only (for drift polling; compare with Base.RefDigest).
func HeadDigest(ctx context.Context, ref string, opts ...remote.Option) (v1.Hash, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, failure.Permanentf(failure.InvalidSpec, "base image %q is not a valid reference: %v", ref, err)
	}
	desc, err := remote.Head(r, append(opts, remote.WithContext(ctx))...)
	if err != nil {
		return v1.Hash{}, registry.Classify(err, registry.AccessBase, "base "+ref)
	}
	if desc == nil {
		return v1.Hash{}, errors.New("HEAD " + ref + ": no descriptor")
	}
	return desc.Digest, nil
}
