package v1alpha1

// Signing signs every pushed manifest (an index and each of its children).
type Signing struct {
	// cosign signs with a cosign key pair, so that `cosign verify --key`
	// (and admission controllers built on it: sigstore policy-controller,
	// Kyverno verifyImages) accept the image. No transparency log and no
	// Fulcio are used: verify with --insecure-ignore-tlog.
	// +required
	Cosign *CosignSigning `json:"cosign"`
}

// SignatureFormat is how a signature is stored in the registry.
// +kubebuilder:validation:Enum=bundle;legacy
type SignatureFormat string

// SignatureFormat values.
const (
	// SignatureBundle stores a sigstore bundle v0.3 as an OCI 1.1 referrer
	// of the signed manifest (cosign v3's default).
	SignatureBundle SignatureFormat = "bundle"
	// SignatureLegacy stores a simple-signing payload in the
	// sha256-<hex>.sig tag (and attestations in sha256-<hex>.att), what
	// cosign v1/v2 and older verifiers read.
	SignatureLegacy SignatureFormat = "legacy"
)

// CosignSigning names the key pair and the storage format.
type CosignSigning struct {
	// keyRef is a Secret in this namespace with the keys cosign.key (the
	// PEM private key as `cosign generate-key-pair` writes it: an
	// ENCRYPTED SIGSTORE PRIVATE KEY or ENCRYPTED COSIGN PRIVATE KEY,
	// ECDSA P-256), cosign.password (its password; may be empty) and
	// optionally cosign.pub. The Secret is read with a direct GET for
	// every build, never cached and never logged; changing it re-signs
	// the image without rebuilding its layers.
	// +required
	KeyRef LocalObjectReference `json:"keyRef"`

	// format is bundle (default: a sigstore bundle v0.3 as an OCI 1.1
	// referrer, or in the sha256-<hex> tag-schema index on a registry
	// without the referrers API) or legacy (the sha256-<hex>.sig tag).
	// +optional
	// +kubebuilder:default=bundle
	Format SignatureFormat `json:"format,omitempty"`
}

// Attestations are in-toto statements about every pushed manifest, wrapped
// in DSSE envelopes signed with spec.signing's key and attached to the
// manifest like its signature.
type Attestations struct {
	// sbom attaches an SPDX 2.3 JSON document (predicate type
	// https://spdx.dev/Document): one package per layer and base image and,
	// with files, every regular file of each added layer with its sha256,
	// taken from the normalization pass (no second read).
	// +optional
	SBOM *SBOM `json:"sbom,omitempty"`

	// provenance attaches SLSA v1 provenance (predicate type
	// https://slsa.dev/provenance/v1): the normalized spec as external
	// parameters, the base and every layer source as resolved
	// dependencies, the DiffIDs as byproducts.
	// +optional
	Provenance *Provenance `json:"provenance,omitempty"`
}

// SBOMFormat is the SBOM document format.
// +kubebuilder:validation:Enum=spdx
type SBOMFormat string

// SBOMSPDX is SPDX 2.3 JSON.
const SBOMSPDX SBOMFormat = "spdx"

// SBOM configures the software bill of materials.
type SBOM struct {
	// format of the document; spdx (SPDX 2.3 JSON) is the only one.
	// +optional
	// +kubebuilder:default=spdx
	Format SBOMFormat `json:"format,omitempty"`

	// files lists every regular file of each added layer with its path and
	// sha256 (default true). Beyond 100 000 files in one layer its file list
	// is left out and its package says so (filesAnalyzed: false).
	// +optional
	Files *bool `json:"files,omitempty"`
}

// WantsFiles reports whether the SBOM lists files (the default).
func (s *SBOM) WantsFiles() bool { return s != nil && (s.Files == nil || *s.Files) }

// Provenance configures SLSA provenance. The builder id comes from the
// manager's --provenance-builder-id flag, not from the spec: a tenant must
// not be able to claim another builder.
type Provenance struct{}

// AttachedArtifact is a signature or attestation kiln attached to a pushed
// manifest.
type AttachedArtifact struct {
	// type is "cosign" for a signature, else the attestation's kind:
	// "spdx" or "slsaprovenance1" (the names cosign verify-attestation
	// --type takes).
	Type string `json:"type"`
	// subject is the digest of the manifest it is about.
	Subject string `json:"subject"`
	// platform is the subject's platform when it is a child of an index.
	// +optional
	Platform string `json:"platform,omitempty"`
	// digest is the digest of the artifact's manifest (bundle format) or
	// of the DSSE envelope / signature layer (legacy format).
	Digest string `json:"digest"`
	// referrer is true when the artifact is an OCI 1.1 referrer of the
	// subject (found through the referrers API or its tag-schema index).
	// +optional
	Referrer bool `json:"referrer,omitempty"`
	// tag is the legacy format's tag that holds it (sha256-<hex>.sig or
	// .att, in the target repository).
	// +optional
	Tag string `json:"tag,omitempty"`
}
