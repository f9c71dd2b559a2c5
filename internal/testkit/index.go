package testkit

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Index is a pushed multi-platform image index.
type Index struct {
	Ref    string
	Digest v1.Hash
	// Children maps each platform as given to PushIndex to its image digest.
	Children map[string]v1.Hash
	// Images maps each platform to its image (for IndexOptions.Reuse).
	Images map[string]v1.Image
}

// IndexOptions shape PushIndex's index.
type IndexOptions struct {
	// Attestation adds a buildx-style attestation manifest (platform
	// unknown/unknown) after the images, which a platform choice must skip.
	Attestation bool
	// Docker makes a Docker manifest list of Docker schema 2 images.
	Docker bool
	// Reuse takes these platforms' images instead of new random ones: an
	// index that moved for the other platforms only.
	Reuse map[string]v1.Image
}

// PushIndex pushes to ref (host/repo:tag) an index with one small random
// image per platform ("os/arch[/variant][:os.version]"), each image's
// config recording its platform as a real base's does.
func PushIndex(t testing.TB, ref string, opts IndexOptions, platforms ...string) Index {
	t.Helper()
	out := Index{Ref: ref, Children: map[string]v1.Hash{}, Images: map[string]v1.Image{}}
	var adds []mutate.IndexAddendum
	for _, ps := range platforms {
		p, err := v1.ParsePlatform(ps)
		if err != nil {
			t.Fatal(err)
		}
		img, ok := opts.Reuse[ps]
		if !ok {
			img = platformImage(t, *p, opts.Docker)
		}
		out.Images[ps] = img
		out.Children[ps], _ = img.Digest()
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	if opts.Attestation {
		att := platformImage(t, v1.Platform{OS: "unknown", Architecture: "unknown"}, opts.Docker)
		adds = append(adds, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"},
		}})
	}
	var idx v1.ImageIndex = mutate.AppendManifests(empty.Index, adds...)
	if opts.Docker {
		idx = mutate.IndexMediaType(idx, types.DockerManifestList)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("pushing index %s: %v", ref, err)
	}
	out.Digest, _ = idx.Digest()
	return out
}

// platformImage is a one-layer random image whose config says p.
func platformImage(t testing.TB, p v1.Platform, docker bool) v1.Image {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = p.OS, p.Architecture, p.Variant, p.OSVersion
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	if !docker {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	return img
}
