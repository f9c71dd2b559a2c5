package signing

import (
	"encoding/json"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The bundle format, as cosign v3 writes it (pkg/oci/remote
// WriteAttestationNewBundleFormat and WriteReferrer).
const (
	// BundleMediaType is the sigstore bundle v0.3 media type: the layer's
	// media type and the referrer's artifactType.
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// AnnotationBundleContent says what the bundle holds; cosign writes
	// "dsse-envelope" for both signatures and attestations of images.
	AnnotationBundleContent = "dev.sigstore.bundle.content"
	// AnnotationBundlePredicateType is the predicate type of the signed
	// statement, so referrer listings can be filtered without fetching.
	AnnotationBundlePredicateType = "dev.sigstore.bundle.predicateType"
	// AnnotationCreated is the OCI creation time annotation. cosign stamps
	// the clock; kiln writes the build's created time, or nothing.
	AnnotationCreated = "org.opencontainers.image.created"
	// EmptyMediaType is the OCI 1.1 empty descriptor's media type; its
	// content is the two bytes "{}".
	EmptyMediaType    = "application/vnd.oci.empty.v1+json"
	bundleContentDSSE = "dsse-envelope"
)

// sigstoreBundle is the protobuf-JSON of a sigstore bundle v0.3 with a key
// (no certificate) and no transparency log entry or timestamp: what
// `cosign sign --key --tlog-upload=false` writes. sigstore-go accepts it:
// v0.3 needs verification material (a public key hint is enough) and
// content, and inclusion proofs only for the tlog entries present.
type sigstoreBundle struct {
	MediaType            string               `json:"mediaType"`
	VerificationMaterial verificationMaterial `json:"verificationMaterial"`
	DSSEEnvelope         Envelope             `json:"dsseEnvelope"`
}

type verificationMaterial struct {
	PublicKey publicKeyIdentifier `json:"publicKey"`
}

type publicKeyIdentifier struct {
	Hint string `json:"hint"`
}

// Bundle returns the sigstore bundle v0.3 JSON of a DSSE envelope over an
// in-toto statement, signed by key, verification material the key's hint.
func Bundle(key *Key, statement []byte) ([]byte, error) {
	env, err := SignEnvelope(key, InTotoPayloadType, statement)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(sigstoreBundle{
		MediaType:            BundleMediaType,
		VerificationMaterial: verificationMaterial{PublicKey: publicKeyIdentifier{Hint: key.Hint()}},
		DSSEEnvelope:         env,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the sigstore bundle: %w", err)
	}
	return b, nil
}

// bundleReferrer wraps a bundle in the OCI 1.1 artifact manifest cosign v3
// pushes as a referrer of subject: artifactType the bundle media type,
// config the empty descriptor (cosign also sets its artifactType), one
// layer, annotations content/predicateType/created, subject the image.
func bundleReferrer(bundle []byte, subject v1.Descriptor, predicateType string, created time.Time) (v1.Image, error) {
	config := newBlob([]byte("{}"), EmptyMediaType)
	layer := newBlob(bundle, BundleMediaType)
	configDesc := config.descriptor()
	configDesc.ArtifactType = BundleMediaType
	ann := map[string]string{
		AnnotationBundleContent:       bundleContentDSSE,
		AnnotationBundlePredicateType: predicateType,
	}
	if !created.IsZero() {
		ann[AnnotationCreated] = created.UTC().Format(time.RFC3339)
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        configDesc,
		Layers:        []v1.Descriptor{layer.descriptor()},
		Annotations:   ann,
		Subject:       &v1.Descriptor{MediaType: subject.MediaType, Size: subject.Size, Digest: subject.Digest},
		ArtifactType:  BundleMediaType,
	}
	return newRawImage(m, config, []blob{layer})
}
