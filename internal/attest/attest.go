// Package attest renders kiln's attestations about a built image as in-toto
// Statements v1: an SPDX 2.3 SBOM (SBOM) and SLSA v1 provenance
// (Provenance). They are pure functions of their arguments: no clock (every
// timestamp is the created argument, the spec's creation time), no random
// identifiers, fields in a fixed order and maps sorted by key, so the same
// build gives the same bytes and, signed deterministically, the same
// attestation digests anywhere.
//
// Locations are shown the way kiln shows them everywhere else: a URL
// through egress.RedactURL (no userinfo, query or fragment); a Secret
// layer's source digest is never passed in (it would let a reader confirm a
// guess of the secret), and the caller leaves it zero.
package attest

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/layer"
)

// In-toto and predicate type identifiers.
const (
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateSPDX = "https://spdx.dev/Document"
	PredicateSLSA = "https://slsa.dev/provenance/v1"
	// BuildType is the SLSA buildType of an ImageBuild; its
	// externalParameters are the normalized spec.
	BuildType = "https://kiln.dev/ImageBuild/v1"
)

// Image is what the attestations describe: one pushed manifest (an index's
// children are attested one by one, each with its own layers).
type Image struct {
	// Name is the repository the image was pushed to ("registry/team/app"),
	// without tag or digest.
	Name string
	// Digest is the manifest digest: the statements' subject.
	Digest v1.Hash
	// Base is the base image by digest; nil for scratch.
	Base *Dependency
	// Layers are the layers kiln added, in image order.
	Layers []Layer
}

// Dependency is an image kiln built on.
type Dependency struct {
	// Name is the repository ("docker.io/library/alpine").
	Name   string
	Digest v1.Hash
}

// Layer is one added layer.
type Layer struct {
	Name string
	// URI is where the layer's bytes came from: the source URL (redacted
	// here whatever the caller passes), "configMap:<ns>/<name>/<key>",
	// "secret:<ns>/<name>/<key>", a registry blob reference, or "" when
	// there is nothing to say (NOASSERTION).
	URI string
	// SourceDigest is the sha256 of the fetched bytes; zero when it must
	// not be shown (a source holding Secret values) or is unknown.
	SourceDigest v1.Hash
	// DiffID is the sha256 of the layer's uncompressed tar, Digest the
	// pushed blob's.
	DiffID, Digest v1.Hash
	// Files is the layer's file list (layer.Options.Files); nil when file
	// lists were not asked for.
	Files *layer.FileList
}

func (img Image) check() error {
	if img.Name == "" {
		return fmt.Errorf("attest: the image has no name")
	}
	if err := checkHash("image digest", img.Digest, false); err != nil {
		return err
	}
	if img.Base != nil {
		if err := checkHash("base "+img.Base.Name, img.Base.Digest, false); err != nil {
			return err
		}
	}
	for _, l := range img.Layers {
		if err := checkHash("layer "+l.Name+" diffID", l.DiffID, false); err != nil {
			return err
		}
		if err := checkHash("layer "+l.Name+" digest", l.Digest, false); err != nil {
			return err
		}
		if err := checkHash("layer "+l.Name+" source digest", l.SourceDigest, true); err != nil {
			return err
		}
	}
	return nil
}

func checkHash(what string, h v1.Hash, zeroOK bool) error {
	switch {
	case h == (v1.Hash{}) && zeroOK:
		return nil
	case h.Algorithm != "sha256" || len(h.Hex) != 64:
		return fmt.Errorf("attest: %s %q is not a sha256 digest", what, h.String())
	}
	return nil
}

// statement is an in-toto Statement v1.
type statement struct {
	Type          string    `json:"_type"`
	Subject       []subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     any       `json:"predicate"`
}

type subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

func newStatement(img Image, predicateType string, predicate any) ([]byte, error) {
	b, err := json.Marshal(statement{
		Type:          StatementType,
		Subject:       []subject{{Name: img.Name, Digest: sha256Of(img.Digest)}},
		PredicateType: predicateType,
		Predicate:     predicate,
	})
	if err != nil {
		return nil, fmt.Errorf("attest: encoding the %s statement: %w", predicateType, err)
	}
	return b, nil
}

func sha256Of(h v1.Hash) map[string]string { return map[string]string{"sha256": h.Hex} }

// RedactURI is how a layer's location appears in an attestation: a URL
// (anything with "://") as egress.RedactURL shows it, anything else (the
// "configMap:..." forms) up to a '?' or '#', which no such form has.
func RedactURI(uri string) string {
	if strings.Contains(uri, "://") {
		return egress.RedactURL(uri)
	}
	if i := strings.IndexAny(uri, "?#"); i >= 0 {
		return uri[:i]
	}
	return uri
}

// timestamp is t in the form SPDX requires (and SLSA accepts): RFC 3339,
// UTC, whole seconds.
func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// purl is the package URL of an image by digest
// (github.com/package-url/purl-spec, type oci): the last path component,
// the digest, and the repository it is in.
func purl(repo string, d v1.Hash) string {
	last := repo[strings.LastIndex(repo, "/")+1:]
	return "pkg:oci/" + strings.ToLower(last) + "@sha256%3A" + d.Hex + "?repository_url=" + repo
}
