// Package signing makes what cosign verifies: signatures and DSSE-signed
// in-toto attestations of an image, in cosign v3's two wire formats, from
// a cosign private key, with no transparency log, certificate or clock.
//
// Keys: ParseKey reads the PEM key `cosign generate-key-pair` writes
// (ENCRYPTED SIGSTORE PRIVATE KEY; ENCRYPTED COSIGN PRIVATE KEY from older
// releases): go-securesystemslib's scrypt + nacl/secretbox JSON around a
// PKCS #8 ECDSA P-256 key. Errors are *KeyError (Reason KeyInvalid or
// WrongPassword) and never quote the key or the password.
//
// Formats (Format):
//
//   - FormatBundle (cosign v3's default): a sigstore bundle v0.3 holding a
//     DSSE envelope, in an OCI 1.1 artifact manifest (artifactType
//     BundleMediaType, empty config, annotations dev.sigstore.bundle.content
//     and dev.sigstore.bundle.predicateType) whose subject is the image.
//     A signature is a DSSE envelope over CosignSignStatement (predicate
//     https://sigstore.dev/cosign/sign/v1), as `cosign sign` writes it: cosign
//     verify reads only DSSE bundles for images. The bundle's verification
//     material is the public key hint; with no tlog entry and no timestamp
//     cosign accepts it under `verify --key K --insecure-ignore-tlog`.
//   - FormatLegacy: the "sha256-<hex>.sig" image of simple-signing layers
//     (signature in the dev.cosignproject.cosign/signature annotation) and
//     the ".att" image of DSSE envelope layers (predicateType annotation).
//     AppendLegacy merges a new one into what the tag holds.
//
// Reproducibility: ECDSA signing is deterministic (RFC 6979, by crypto/ecdsa
// with a nil random source), and no function reads the clock: the only
// time written is the created argument (bundle manifest annotation
// org.opencontainers.image.created; omitted when zero). So for the same key
// and inputs every output is byte-identical, and every digest is
// reproducible: the signature bytes, the simple-signing payload, DSSE
// envelopes, bundles, bundle referrer manifests, .sig/.att layers and
// images (AppendLegacy keeps order: existing entries first, then new ones).
// The one digest that is not kiln's alone is the registry's tag-schema
// fallback index, which lists every referrer anyone pushed.
package signing
