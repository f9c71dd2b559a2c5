package attest

import (
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/version"
)

// SPDX 2.3 JSON, the parts kiln writes (field order as in the spec).
type spdxDocument struct {
	SPDXID            string             `json:"SPDXID"`
	SPDXVersion       string             `json:"spdxVersion"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Name              string             `json:"name"`
	DataLicense       string             `json:"dataLicense"`
	DocumentNamespace string             `json:"documentNamespace"`
	DocumentDescribes []string           `json:"documentDescribes"`
	Packages          []spdxPackage      `json:"packages"`
	Files             []spdxFile         `json:"files,omitempty"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	SPDXID                string            `json:"SPDXID"`
	Name                  string            `json:"name"`
	VersionInfo           string            `json:"versionInfo,omitempty"`
	DownloadLocation      string            `json:"downloadLocation"`
	FilesAnalyzed         bool              `json:"filesAnalyzed"`
	Checksums             []spdxChecksum    `json:"checksums,omitempty"`
	ExternalRefs          []spdxExternalRef `json:"externalRefs,omitempty"`
	PrimaryPackagePurpose string            `json:"primaryPackagePurpose,omitempty"`
	Comment               string            `json:"comment,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type spdxFile struct {
	SPDXID    string         `json:"SPDXID"`
	FileName  string         `json:"fileName"`
	Checksums []spdxChecksum `json:"checksums"`
}

type spdxRelationship struct {
	SPDXElementID      string `json:"spdxElementId"`
	RelationshipType   string `json:"relationshipType"`
	RelatedSPDXElement string `json:"relatedSpdxElement"`
}

// SPDX identifiers. Layers and files are numbered, not named: a layer name
// or a path may hold characters an SPDXID cannot ([A-Za-z0-9.-] only), and
// one path may be in several layers.
const (
	spdxDocumentID = "SPDXRef-DOCUMENT"
	spdxImageID    = "SPDXRef-Image"
	spdxBaseID     = "SPDXRef-Base"
	noAssertion    = "NOASSERTION"
)

func layerID(i int) string   { return fmt.Sprintf("SPDXRef-Layer-%d", i) }
func fileID(i, j int) string { return fmt.Sprintf("SPDXRef-File-%d-%d", i, j) }

// SBOM returns an in-toto Statement v1 whose predicate is an SPDX 2.3 JSON
// document of img: a package for the image (purpose CONTAINER), one for
// its base (by digest, DESCENDANT_OF), one per added layer (CONTAINS) with
// its location, source checksum, and diffID and blob digest as external
// references; with a layer's file list, a file element per regular file
// with its sha256 (CONTAINS). A layer whose list was omitted (too many
// files) or not asked for has filesAnalyzed false and a comment saying
// which. The namespace is derived from the image's name and digest.
func SBOM(img Image, created time.Time) ([]byte, error) {
	if err := img.check(); err != nil {
		return nil, err
	}
	doc := spdxDocument{
		SPDXID:      spdxDocumentID,
		SPDXVersion: "SPDX-2.3",
		CreationInfo: spdxCreationInfo{
			Created:  timestamp(created),
			Creators: []string{"Tool: kiln-" + version.Version},
		},
		Name:              img.Name + "@" + img.Digest.String(),
		DataLicense:       "CC0-1.0",
		DocumentNamespace: "https://kiln.dev/spdx/" + img.Name + "/" + img.Digest.Algorithm + "-" + img.Digest.Hex,
		DocumentDescribes: []string{spdxImageID},
		Packages: []spdxPackage{{
			SPDXID: spdxImageID, Name: img.Name, VersionInfo: img.Digest.String(),
			DownloadLocation:      noAssertion,
			Checksums:             []spdxChecksum{{"SHA256", img.Digest.Hex}},
			ExternalRefs:          []spdxExternalRef{{"PACKAGE-MANAGER", "purl", purl(img.Name, img.Digest)}},
			PrimaryPackagePurpose: "CONTAINER",
		}},
		Relationships: []spdxRelationship{{spdxDocumentID, "DESCRIBES", spdxImageID}},
	}
	if b := img.Base; b != nil {
		doc.Packages = append(doc.Packages, spdxPackage{
			SPDXID: spdxBaseID, Name: b.Name, VersionInfo: b.Digest.String(),
			DownloadLocation:      noAssertion,
			Checksums:             []spdxChecksum{{"SHA256", b.Digest.Hex}},
			ExternalRefs:          []spdxExternalRef{{"PACKAGE-MANAGER", "purl", purl(b.Name, b.Digest)}},
			PrimaryPackagePurpose: "CONTAINER",
			Comment:               "the base image, by manifest digest",
		})
		doc.Relationships = append(doc.Relationships, spdxRelationship{spdxImageID, "DESCENDANT_OF", spdxBaseID})
	}
	for i, l := range img.Layers {
		doc.Packages = append(doc.Packages, layerPackage(i, l))
		doc.Relationships = append(doc.Relationships, spdxRelationship{spdxImageID, "CONTAINS", layerID(i)})
		if l.Files == nil || l.Files.Omitted {
			continue
		}
		for j, f := range l.Files.Files {
			doc.Files = append(doc.Files, spdxFile{SPDXID: fileID(i, j), FileName: "./" + f.Path,
				Checksums: []spdxChecksum{{"SHA256", f.Digest.Hex}}})
			doc.Relationships = append(doc.Relationships, spdxRelationship{layerID(i), "CONTAINS", fileID(i, j)})
		}
	}
	return newStatement(img, PredicateSPDX, doc)
}

func layerPackage(i int, l Layer) spdxPackage {
	p := spdxPackage{
		SPDXID: layerID(i), Name: l.Name,
		DownloadLocation: RedactURI(l.URI),
		ExternalRefs: []spdxExternalRef{
			{"OTHER", "oci-diffid", l.DiffID.String()},
			{"OTHER", "oci-layer-digest", l.Digest.String()},
		},
		PrimaryPackagePurpose: "ARCHIVE",
	}
	if p.DownloadLocation == "" {
		p.DownloadLocation = noAssertion
	}
	if l.SourceDigest != (v1.Hash{}) {
		p.Checksums = []spdxChecksum{{"SHA256", l.SourceDigest.Hex}}
	}
	p.FilesAnalyzed, p.Comment = filesAnalyzed(l.Files)
	return p
}

// filesAnalyzed says whether a layer's files are listed, and if not, why.
func filesAnalyzed(fl *layer.FileList) (bool, string) {
	switch {
	case fl == nil:
		return false, "the layer's files were not listed (file-level SBOM not requested)"
	case fl.Omitted:
		return false, fmt.Sprintf("the layer's file list was omitted: it has %d regular files, more than kiln lists per layer", fl.Count)
	}
	return true, ""
}
