package image

import (
	"bytes"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// memImage is a v1.Image whose manifest and config are fixed bytes computed
// once, and whose layers are given objects in manifest order. It exists so
// that exactly one manifest is computed per build (mutate recomputes lazily
// and hides what it changed) and so that the layer objects handed to
// remote.Write are the very ones of the base (remote.MountableLayer keeps
// cross-repository mounts working).
type memImage struct {
	mt       types.MediaType
	config   []byte
	manifest []byte
	parsed   *v1.Manifest
	layers   []v1.Layer
}

var _ v1.Image = (*memImage)(nil)

// newMemImage builds the manifest for config and layers. descs are the
// manifest's layer descriptors, one per layer, already carrying the media
// types, URLs and annotations wanted.
func newMemImage(mt, configMT types.MediaType, config []byte, layers []v1.Layer, descs []v1.Descriptor, annotations map[string]string) (*memImage, error) {
	if len(layers) != len(descs) {
		return nil, fmt.Errorf("building manifest: %d layers but %d descriptors", len(layers), len(descs))
	}
	cd, size, err := v1.SHA256(bytes.NewReader(config))
	if err != nil {
		return nil, fmt.Errorf("hashing config: %w", err)
	}
	m := &v1.Manifest{
		SchemaVersion: 2,
		MediaType:     mt,
		Config:        v1.Descriptor{MediaType: configMT, Size: size, Digest: cd},
		Layers:        descs,
	}
	if len(annotations) > 0 {
		m.Annotations = annotations
	}
	if m.Layers == nil {
		m.Layers = []v1.Descriptor{} // "layers": [] rather than null
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	return &memImage{mt: mt, config: config, manifest: raw, parsed: m, layers: layers}, nil
}

func (i *memImage) Layers() ([]v1.Layer, error)         { return append([]v1.Layer(nil), i.layers...), nil }
func (i *memImage) MediaType() (types.MediaType, error) { return i.mt, nil }
func (i *memImage) Size() (int64, error)                { return int64(len(i.manifest)), nil }
func (i *memImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *memImage) RawManifest() ([]byte, error)        { return i.manifest, nil }

func (i *memImage) ConfigName() (v1.Hash, error) { return i.parsed.Config.Digest, nil }

func (i *memImage) ConfigFile() (*v1.ConfigFile, error) {
	return v1.ParseConfigFile(bytes.NewReader(i.config))
}

func (i *memImage) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(i.manifest))
	return h, err
}

func (i *memImage) Manifest() (*v1.Manifest, error) {
	return v1.ParseManifest(bytes.NewReader(i.manifest))
}

func (i *memImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if h == i.parsed.Config.Digest {
		return partial.ConfigLayer(i)
	}
	for n, d := range i.parsed.Layers {
		if d.Digest == h {
			return i.layers[n], nil
		}
	}
	return nil, fmt.Errorf("image has no layer with digest %s", h)
}

func (i *memImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	for _, l := range i.layers {
		if d, err := l.DiffID(); err == nil && d == h {
			return l, nil
		}
	}
	return nil, fmt.Errorf("image has no layer with diff ID %s", h)
}

// encodeConfig serializes a config file. encoding/json sorts map keys, so
// the bytes (and the config digest) depend on the content only.
func encodeConfig(cf *v1.ConfigFile) ([]byte, error) {
	raw, err := json.Marshal(cf)
	if err != nil {
		return nil, fmt.Errorf("encoding image config: %w", err)
	}
	return raw, nil
}
