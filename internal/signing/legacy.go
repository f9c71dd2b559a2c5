package signing

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The legacy format, as cosign writes it with --new-bundle-format=false
// (pkg/oci/static, pkg/oci/mutate, cmd/cosign/cli/attest).
const (
	// SimpleSigningMediaType is the layer media type of a legacy signature.
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// DSSEMediaType is the layer media type of a legacy attestation.
	DSSEMediaType = "application/vnd.dsse.envelope.v1+json"
	// AnnotationSignature carries the base64 signature of a legacy layer;
	// attestation layers carry it empty (their signature is inside).
	AnnotationSignature = "dev.cosignproject.cosign/signature"
	// AnnotationPredicateType is the predicate type of a legacy attestation.
	AnnotationPredicateType = "predicateType"
	// maxLegacyLayers is cosign's limit on signatures in one .sig/.att
	// image (pkg/oci/mutate maxLayers): past it cosign refuses to read it.
	maxLegacyLayers = 1000
)

// SignatureTag is the tag the legacy format keeps an image's signatures
// under: "sha256-<hex>.sig" in the image's repository.
func SignatureTag(subject v1.Hash) string { return legacyTag(subject, "sig") }

// AttestationTag is the legacy format's tag for attestations: ".att".
func AttestationTag(subject v1.Hash) string { return legacyTag(subject, "att") }

func legacyTag(h v1.Hash, suffix string) string {
	return h.Algorithm + "-" + h.Hex + "." + suffix
}

// legacySignatureLayer is the simple-signing payload with the base64
// signature in the layer annotation.
func legacySignatureLayer(key *Key, dockerRef string, subject v1.Hash) (mutate.Addendum, error) {
	payload := SimpleSigning(dockerRef, subject)
	sig, err := key.Sign(payload)
	if err != nil {
		return mutate.Addendum{}, err
	}
	return addendum(newBlob(payload, SimpleSigningMediaType), map[string]string{
		AnnotationSignature: base64.StdEncoding.EncodeToString(sig),
	})
}

// legacyAttestationLayer is the DSSE envelope JSON as the layer, the
// predicate type and an empty signature annotation (cosign's
// static.NewAttestation).
func legacyAttestationLayer(key *Key, statement []byte, predicateType string) (mutate.Addendum, error) {
	env, err := SignEnvelope(key, InTotoPayloadType, statement)
	if err != nil {
		return mutate.Addendum{}, err
	}
	b, err := json.Marshal(env)
	if err != nil {
		return mutate.Addendum{}, fmt.Errorf("encoding the DSSE envelope: %w", err)
	}
	return addendum(newBlob(b, DSSEMediaType), map[string]string{
		AnnotationSignature:     "",
		AnnotationPredicateType: predicateType,
	})
}

func addendum(b blob, ann map[string]string) (mutate.Addendum, error) {
	l, err := partialLayer(b)
	if err != nil {
		return mutate.Addendum{}, err
	}
	return mutate.Addendum{Layer: l, Annotations: ann, MediaType: b.mediaType}, nil
}

// legacyBase is cosign's empty.Signatures(): an empty image with OCI
// media types. Its config has no timestamps (zero times), so the image's
// digest depends only on its layers and their annotations.
func legacyBase() v1.Image {
	return mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
}

func legacyImage(adds []mutate.Addendum) (v1.Image, error) {
	if len(adds) > maxLegacyLayers {
		return nil, fmt.Errorf("%d signatures in one legacy image, cosign reads at most %d", len(adds), maxLegacyLayers)
	}
	img, err := mutate.Append(legacyBase(), adds...)
	if err != nil {
		return nil, fmt.Errorf("building the legacy signature image: %w", err)
	}
	return img, nil
}

// AppendLegacy merges the signatures (or attestations) of add into
// existing, the image a .sig/.att tag already holds (nil: none), keeping
// every entry already there in its order (others may have signed too) and
// adding only layers not already present with the same digest and
// annotations. When nothing is new it returns existing itself, so the
// caller can tell by digest that there is nothing to write.
func AppendLegacy(existing, add v1.Image) (v1.Image, error) {
	newAdds, err := addenda(add)
	if err != nil {
		return nil, fmt.Errorf("reading the new signature image: %w", err)
	}
	if existing == nil {
		return legacyImage(newAdds)
	}
	old, err := addenda(existing)
	if err != nil {
		return nil, fmt.Errorf("reading the signatures already attached: %w", err)
	}
	merged := old
	for _, a := range newAdds {
		if !containsLayer(merged, a) {
			merged = append(merged, a)
		}
	}
	if len(merged) == len(old) {
		return existing, nil
	}
	return legacyImage(merged)
}

// addenda lists an image's layers with their manifest annotations. The
// layers are wrapped so their DiffID is their digest: cosign's signature
// layers are uncompressed, and an image another tool wrote may carry a
// config without diff_ids that mutate would otherwise need.
func addenda(img v1.Image) ([]mutate.Addendum, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	out := make([]mutate.Addendum, 0, len(m.Layers))
	for _, d := range m.Layers {
		l, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		out = append(out, mutate.Addendum{
			Layer:       rawLayer{Layer: l, desc: d},
			Annotations: maps.Clone(d.Annotations),
			MediaType:   d.MediaType,
		})
	}
	return out, nil
}

func containsLayer(adds []mutate.Addendum, a mutate.Addendum) bool {
	d, err := a.Layer.Digest()
	if err != nil {
		return false
	}
	for _, o := range adds {
		od, err := o.Layer.Digest()
		if err == nil && od == d && o.MediaType == a.MediaType && maps.Equal(o.Annotations, a.Annotations) {
			return true
		}
	}
	return false
}

// rawLayer passes a layer through as the stored blob it is: digest, size
// and media type from its descriptor, DiffID = digest, no decompression.
type rawLayer struct {
	v1.Layer
	desc v1.Descriptor
}

func (l rawLayer) Digest() (v1.Hash, error)             { return l.desc.Digest, nil }
func (l rawLayer) DiffID() (v1.Hash, error)             { return l.desc.Digest, nil }
func (l rawLayer) Size() (int64, error)                 { return l.desc.Size, nil }
func (l rawLayer) MediaType() (types.MediaType, error)  { return l.desc.MediaType, nil }
func (l rawLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
