package image

import (
	"bytes"
	"fmt"
	"maps"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/failure"
)

// IndexSpec is everything AssembleIndex needs.
type IndexSpec struct {
	// Children are the assembled images, in index order.
	Children []*Assembled
	// Base is the base the index is built on (spec.base), or nil when no
	// child uses a registry base from spec.base: its reference and digest
	// become the index's base annotations, and a Docker manifest list base
	// keeps the index a Docker manifest list.
	Base *Base
	// Annotations are the spec's; they win over kiln's base annotations.
	Annotations map[string]string
}

// AssembledIndex is the final index, not pushed yet.
type AssembledIndex struct {
	Index     v1.ImageIndex
	Digest    v1.Hash
	MediaType types.MediaType
	// Platforms are the children's platforms as the index records them.
	Platforms []v1.Platform
}

// AssembleIndex builds the index of already assembled (and verified)
// children. Each child's descriptor carries the platform of its config
// (with the full os.version of the base it was built on), as ko and
// buildx write them. The index is an OCI index, except on a Docker
// manifest list base whose every child stayed a Docker manifest: then a
// Docker manifest list, which has no annotations.
func AssembleIndex(s IndexSpec) (*AssembledIndex, error) {
	if len(s.Children) == 0 {
		return nil, failure.Permanentf(failure.InvalidSpec, "assembling the index: no images")
	}
	docker := s.Base != nil && s.Base.RefMediaType == types.DockerManifestList
	adds := make([]mutate.IndexAddendum, len(s.Children))
	plats := make([]v1.Platform, len(s.Children))
	for i, c := range s.Children {
		cf, err := c.Image.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("assembling the index: reading the config of %s: %w", c.Digest, err)
		}
		plats[i] = platformOf(cf)
		p := plats[i]
		for j := range i {
			if plats[j].Equals(p) {
				return nil, failure.Permanentf(failure.InvalidSpec,
					"assembling the index: images %d and %d are both %s (their bases' configs say so); an index lists each platform once", j, i, formatPlatform(p))
			}
		}
		adds[i] = mutate.IndexAddendum{Add: c.Image, Descriptor: v1.Descriptor{MediaType: c.MediaType, Platform: &p}}
		docker = docker && c.MediaType == types.DockerManifestSchema2
	}
	var idx v1.ImageIndex = mutate.AppendManifests(empty.Index, adds...)
	mt := types.OCIImageIndex
	if docker {
		mt = types.DockerManifestList
	}
	idx = mutate.IndexMediaType(idx, mt)
	if ann := indexAnnotations(s.Base, s.Annotations); !docker && len(ann) > 0 {
		idx = mutate.Annotations(idx, ann).(v1.ImageIndex)
	}
	d, err := idx.Digest()
	if err != nil {
		return nil, fmt.Errorf("assembling the index: %w", err)
	}
	a := &AssembledIndex{Index: idx, Digest: d, MediaType: mt, Platforms: plats}
	if err := VerifyIndex(a, s.Children); err != nil {
		return nil, err
	}
	return a, nil
}

// indexAnnotations are the spec's plus the base index's name and digest.
func indexAnnotations(b *Base, spec map[string]string) map[string]string {
	out := map[string]string{}
	if b != nil && !b.Scratch && !b.Archive && b.RefDigest != (v1.Hash{}) {
		out[AnnotationBaseName] = b.Name
		out[AnnotationBaseDigest] = b.RefDigest.String()
	}
	maps.Copy(out, spec)
	return out
}

// VerifyIndex re-reads the serialized index as a registry would: it must
// parse, hash to Digest, and list exactly the children, in order, with
// their digests, sizes and media types.
func VerifyIndex(a *AssembledIndex, children []*Assembled) error {
	raw, err := a.Index.RawManifest()
	if err != nil {
		return fmt.Errorf("verifying the index: %w", err)
	}
	if h, _, err := v1.SHA256(bytes.NewReader(raw)); err != nil || h != a.Digest {
		return failure.Permanentf(failure.InvalidSpec, "verifying the index: its bytes hash to %s, not %s", h, a.Digest)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("verifying the index: %w", err)
	}
	if im.MediaType != a.MediaType || len(im.Manifests) != len(children) {
		return failure.Permanentf(failure.InvalidSpec, "verifying the index: it is a %s of %d images, want a %s of %d",
			im.MediaType, len(im.Manifests), a.MediaType, len(children))
	}
	for i, c := range children {
		raw, err := c.Image.RawManifest()
		if err != nil {
			return fmt.Errorf("verifying the index: %w", err)
		}
		got := im.Manifests[i]
		if got.Digest != c.Digest || got.Size != int64(len(raw)) || got.MediaType != c.MediaType || got.Platform == nil {
			return failure.Permanentf(failure.InvalidSpec, "verifying the index: entry %d is %s (%d bytes, %s), want %s (%d bytes, %s) with a platform",
				i, got.Digest, got.Size, got.MediaType, c.Digest, len(raw), c.MediaType)
		}
	}
	return nil
}
