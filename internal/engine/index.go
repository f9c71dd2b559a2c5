package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/version"
)

// assembleIndex assembles every child exactly as a single-platform build
// (assemble), then the index over them, and returns the status describing
// both: the index in image/digest/mediaType, each child in manifests.
func (e *Engine) assembleIndex(spec *kilnv1.ImageBuildSpec, children []child, bases []*image.Base, layers [][]*builtLayer) (*image.AssembledIndex, kilnv1.ImageBuildStatus, error) {
	var st kilnv1.ImageBuildStatus
	asms := make([]*image.Assembled, len(children))
	var specBase *image.Base
	for i, c := range children {
		asm, err := e.assemble(c.spec, bases[i], layers[i])
		if err != nil {
			return nil, st, inPlatforms([]string{c.requested}, err)
		}
		asms[i] = asm
		ms, err := manifestStatus(c, bases[i], layers[i], asm)
		if err != nil {
			return nil, st, err
		}
		st.Manifests = append(st.Manifests, ms)
		st.Platforms = append(st.Platforms, c.requested)
		for _, n := range asm.Notes {
			st.Notes = append(st.Notes, c.requested+": "+n)
		}
		if spec.Platforms[i].Base == nil && specBase == nil {
			specBase = bases[i]
		}
	}
	idx, err := image.AssembleIndex(image.IndexSpec{Children: asms, Base: specBase, Annotations: spec.Annotations})
	if err != nil {
		return nil, st, err
	}
	for i, p := range idx.Platforms {
		st.Manifests[i].Platform = platformString(p)
	}
	st.Digest, st.MediaType = idx.Digest.String(), string(idx.MediaType)
	if specBase != nil {
		st.Base = &kilnv1.BaseStatus{Image: specBase.Name}
		if !specBase.Scratch && specBase.RefDigest != (v1.Hash{}) {
			// The index is built on what the reference resolved to (an
			// index, usually): drift polling compares with refDigest.
			st.Base.Digest, st.Base.RefDigest = specBase.RefDigest.String(), specBase.RefDigest.String()
		}
	}
	st.InputDigest = indexInputDigest(spec, st)
	return idx, st, nil
}

// manifestStatus records one child of an index.
func manifestStatus(c child, base *image.Base, layers []*builtLayer, asm *image.Assembled) (kilnv1.ManifestStatus, error) {
	cs := statusOf(c.spec, base, layers, asm)
	raw, err := asm.Image.RawManifest()
	if err != nil {
		return kilnv1.ManifestStatus{}, fmt.Errorf("platform %s: reading its manifest: %w", c.requested, err)
	}
	return kilnv1.ManifestStatus{
		Requested: c.requested, Digest: cs.Digest, ConfigDigest: cs.ConfigDigest,
		MediaType: cs.MediaType, Size: int64(len(raw)), Base: cs.Base,
		InputDigest: cs.InputDigest, Layers: cs.Layers,
	}, nil
}

// indexRecord is what an index's inputDigest hashes: the children's own
// inputDigests (each covers its base child, layers and config) and what the
// index itself adds.
type indexRecord struct {
	Engine      string            `json:"engine"`
	Kind        string            `json:"kind"`
	BaseDigest  string            `json:"baseDigest,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Children    []indexChild      `json:"children"`
}

type indexChild struct {
	Platform    string `json:"platform"`
	InputDigest string `json:"inputDigest"`
}

func indexInputDigest(spec *kilnv1.ImageBuildSpec, st kilnv1.ImageBuildStatus) string {
	rec := indexRecord{Engine: version.Engine, Kind: "index", Annotations: spec.Annotations}
	if st.Base != nil {
		rec.BaseDigest = st.Base.RefDigest
	}
	for _, m := range st.Manifests {
		rec.Children = append(rec.Children, indexChild{Platform: m.Requested, InputDigest: m.InputDigest})
	}
	b, err := json.Marshal(rec)
	if err != nil {
		panic(fmt.Sprintf("marshalling index record: %v", err)) // plain data
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
