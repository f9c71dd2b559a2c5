package signing

import (
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// Format is how signatures and attestations are attached to an image.
type Format string

const (
	// FormatBundle: a sigstore bundle v0.3 in an OCI 1.1 artifact manifest
	// whose subject is the image, pushed by digest. Registries without the
	// referrers API get the spec's "sha256-<hex>" tag-schema index instead
	// (go-containerregistry's remote.Write maintains it). cosign v3's
	// default.
	FormatBundle Format = "bundle"
	// FormatLegacy: an image under the "sha256-<hex>.sig" (signatures) or
	// ".att" (attestations) tag, one layer per signature. Merge with what
	// the tag already holds through AppendLegacy before pushing.
	FormatLegacy Format = "legacy"
)

// SignatureArtifact signs the image subject describes and returns what to
// push:
//   - FormatBundle: the referrer manifest of a bundle whose DSSE envelope
//     signs CosignSignStatement(subject.Digest) (what `cosign sign` does in
//     v3); push it by its digest. dockerRef is not used.
//   - FormatLegacy: a .sig image with one simple-signing layer claiming
//     dockerRef (the repository, e.g. "registry:5000/app"); merge it into
//     the tag's current image with AppendLegacy and push it to
//     SignatureTag(subject.Digest). created is not used (cosign writes no
//     time there either).
//
// created becomes the bundle manifest's creation annotation; zero leaves
// it out. The same key and inputs give the same image digest.
func SignatureArtifact(key *Key, subject v1.Descriptor, dockerRef string, format Format, created time.Time) (v1.Image, error) {
	if err := checkSubject(key, subject); err != nil {
		return nil, err
	}
	switch format {
	case FormatBundle:
		b, err := Bundle(key, CosignSignStatement(subject.Digest))
		if err != nil {
			return nil, err
		}
		return bundleReferrer(b, subject, CosignSignPredicateType, created)
	case FormatLegacy:
		if dockerRef == "" {
			return nil, fmt.Errorf("signing %s: the legacy format needs the repository the signature claims (docker-reference)", subject.Digest)
		}
		a, err := legacySignatureLayer(key, dockerRef, subject.Digest)
		if err != nil {
			return nil, err
		}
		return legacyImage([]mutate.Addendum{a})
	default:
		return nil, unknownFormat(format)
	}
}

// AttestationArtifact signs an in-toto Statement v1 (its JSON exactly as
// given: the bytes are the DSSE payload) about the image subject describes
// and returns what to push, as SignatureArtifact does: a bundle referrer
// annotated with predicateType, or a one-layer .att image for
// AttestationTag(subject.Digest) to merge with AppendLegacy. The statement
// must be of predicateType and name subject's digest among its subjects;
// otherwise cosign would never match it, and nothing is returned.
func AttestationArtifact(key *Key, subject v1.Descriptor, statement []byte, predicateType string, format Format, created time.Time) (v1.Image, error) {
	if err := checkSubject(key, subject); err != nil {
		return nil, err
	}
	if err := checkStatement(statement, predicateType, subject.Digest); err != nil {
		return nil, fmt.Errorf("attesting %s: %w", subject.Digest, err)
	}
	switch format {
	case FormatBundle:
		b, err := Bundle(key, statement)
		if err != nil {
			return nil, err
		}
		return bundleReferrer(b, subject, predicateType, created)
	case FormatLegacy:
		a, err := legacyAttestationLayer(key, statement, predicateType)
		if err != nil {
			return nil, err
		}
		return legacyImage([]mutate.Addendum{a})
	default:
		return nil, unknownFormat(format)
	}
}

func unknownFormat(f Format) error {
	return fmt.Errorf("signature format %q is not one of %q, %q", f, FormatBundle, FormatLegacy)
}

// checkSubject rejects what cosign could not match to the image: only
// sha256 digests name images there (and in the fallback tag).
func checkSubject(key *Key, d v1.Descriptor) error {
	if key == nil {
		return fmt.Errorf("signing: no key")
	}
	if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 {
		return fmt.Errorf("signing: subject digest %q is not sha256:<64 hex>", d.Digest)
	}
	if d.MediaType == "" || d.Size <= 0 {
		return fmt.Errorf("signing %s: the subject descriptor needs its media type and size", d.Digest)
	}
	return nil
}
