package signing

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// blob is content held in memory with the media type it is pushed under.
// Signature payloads, envelopes and bundles are uncompressed, so the
// digest doubles as the DiffID (as cosign's static layers do).
type blob struct {
	data      []byte
	mediaType types.MediaType
	digest    v1.Hash
}

func newBlob(data []byte, mt types.MediaType) blob {
	sum := sha256.Sum256(data)
	return blob{data: data, mediaType: mt, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
}

func (b blob) descriptor() v1.Descriptor {
	return v1.Descriptor{MediaType: b.mediaType, Size: int64(len(b.data)), Digest: b.digest}
}

// Digest, DiffID, Size, MediaType, Compressed and Uncompressed make a blob
// a partial.CompressedLayer (and UncompressedLayer).
func (b blob) Digest() (v1.Hash, error)            { return b.digest, nil }
func (b blob) DiffID() (v1.Hash, error)            { return b.digest, nil }
func (b blob) Size() (int64, error)                { return int64(len(b.data)), nil }
func (b blob) MediaType() (types.MediaType, error) { return b.mediaType, nil }
func (b blob) Compressed() (io.ReadCloser, error)  { return io.NopCloser(bytes.NewReader(b.data)), nil }
func (b blob) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b.data)), nil
}

// rawImage is an image whose manifest bytes this package wrote itself, so
// the digest is exactly the hash of bytes it controls (no library may add
// a field or a timestamp). It implements partial.CompressedImageCore.
type rawImage struct {
	manifest []byte
	config   blob
	layers   []blob
}

func (r *rawImage) RawManifest() ([]byte, error)        { return r.manifest, nil }
func (r *rawImage) RawConfigFile() ([]byte, error)      { return r.config.data, nil }
func (r *rawImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

func (r *rawImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == r.config.digest {
		return r.config, nil
	}
	for _, l := range r.layers {
		if l.digest == h {
			return l, nil
		}
	}
	return nil, fmt.Errorf("blob %s is not in this image", h)
}

// newRawImage serializes m (the manifest must list config and layers as
// built from these blobs) and wraps it as a v1.Image.
func newRawImage(m v1.Manifest, config blob, layers []blob) (v1.Image, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding the manifest: %w", err)
	}
	return partial.CompressedToImage(&rawImage{manifest: raw, config: config, layers: layers})
}

func partialLayer(b blob) (v1.Layer, error) { return partial.CompressedToLayer(b) }
