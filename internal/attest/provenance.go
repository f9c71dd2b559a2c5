package attest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/version"
)

// Build is what the provenance says about the build itself.
type Build struct {
	// Spec is the normalized spec: the externalParameters. Any value that
	// encodes to a JSON object (the API type, a json.RawMessage). Every
	// string in it that holds a URL is shown through egress.RedactURL.
	Spec any
	// Internal, when set, is the internalParameters (e.g. the engine
	// version and limits), redacted the same way.
	Internal any
	// Namespace, Name, UID and Generation identify the ImageBuild: the
	// invocationId is "namespace/name/uid/generation".
	Namespace, Name, UID string
	Generation           int64
	// BuilderID is runDetails.builder.id; "" means DefaultBuilderID().
	BuilderID string
}

// DefaultBuilderID is the builder id when the manager is given none.
func DefaultBuilderID() string { return "https://kiln.dev/kiln@" + version.Version }

// SLSA provenance v1 (https://slsa.dev/spec/v1.0/provenance), the parts
// kiln writes, in the spec's order.
type slsaProvenance struct {
	BuildDefinition slsaBuildDefinition `json:"buildDefinition"`
	RunDetails      slsaRunDetails      `json:"runDetails"`
}

type slsaBuildDefinition struct {
	BuildType            string               `json:"buildType"`
	ExternalParameters   any                  `json:"externalParameters"`
	InternalParameters   any                  `json:"internalParameters,omitempty"`
	ResolvedDependencies []resourceDescriptor `json:"resolvedDependencies,omitempty"`
}

type slsaRunDetails struct {
	Builder    slsaBuilder          `json:"builder"`
	Metadata   slsaMetadata         `json:"metadata"`
	Byproducts []resourceDescriptor `json:"byproducts,omitempty"`
}

type slsaBuilder struct {
	ID      string            `json:"id"`
	Version map[string]string `json:"version,omitempty"`
}

type slsaMetadata struct {
	InvocationID string `json:"invocationId"`
	StartedOn    string `json:"startedOn"`
	FinishedOn   string `json:"finishedOn"`
}

// resourceDescriptor is in-toto's ResourceDescriptor.
type resourceDescriptor struct {
	URI       string            `json:"uri,omitempty"`
	Digest    map[string]string `json:"digest,omitempty"`
	Name      string            `json:"name,omitempty"`
	MediaType string            `json:"mediaType,omitempty"`
}

// Provenance returns an in-toto Statement v1 whose predicate is SLSA v1
// provenance of img: buildType BuildType, externalParameters the spec,
// resolvedDependencies the base (by digest) and every layer source (its
// redacted location and, where it may be shown, the sha256 of its bytes),
// the builder, invocationId namespace/name/uid/generation, startedOn and
// finishedOn both created (kiln never puts the clock into what it signs:
// these are the image's creation time, not the wall time of the build),
// and the layers' DiffIDs as byproducts.
func Provenance(img Image, b Build, created time.Time) ([]byte, error) {
	if err := img.check(); err != nil {
		return nil, err
	}
	ext, err := redactedValue(b.Spec)
	if err != nil {
		return nil, fmt.Errorf("attest: externalParameters: %w", err)
	}
	if _, ok := ext.(map[string]any); !ok {
		return nil, fmt.Errorf("attest: externalParameters must be a JSON object, got %T", ext)
	}
	var internal any
	if b.Internal != nil {
		if internal, err = redactedValue(b.Internal); err != nil {
			return nil, fmt.Errorf("attest: internalParameters: %w", err)
		}
	}
	id := b.BuilderID
	if id == "" {
		id = DefaultBuilderID()
	}
	p := slsaProvenance{
		BuildDefinition: slsaBuildDefinition{
			BuildType: BuildType, ExternalParameters: ext, InternalParameters: internal,
		},
		RunDetails: slsaRunDetails{
			Builder: slsaBuilder{ID: id, Version: map[string]string{"kiln": version.Version, "engine": version.Engine}},
			Metadata: slsaMetadata{
				InvocationID: fmt.Sprintf("%s/%s/%s/%d", b.Namespace, b.Name, b.UID, b.Generation),
				StartedOn:    timestamp(created), FinishedOn: timestamp(created),
			},
		},
	}
	if base := img.Base; base != nil {
		p.BuildDefinition.ResolvedDependencies = append(p.BuildDefinition.ResolvedDependencies, resourceDescriptor{
			URI: purl(base.Name, base.Digest), Digest: sha256Of(base.Digest), Name: "base",
		})
	}
	for _, l := range img.Layers {
		dep := resourceDescriptor{URI: RedactURI(l.URI), Name: "layer/" + l.Name}
		if l.SourceDigest.Hex != "" {
			dep.Digest = sha256Of(l.SourceDigest)
		}
		p.BuildDefinition.ResolvedDependencies = append(p.BuildDefinition.ResolvedDependencies, dep)
		p.RunDetails.Byproducts = append(p.RunDetails.Byproducts, resourceDescriptor{
			Name: "layer/" + l.Name + "/diffID", Digest: sha256Of(l.DiffID),
			MediaType: "application/vnd.oci.image.layer.v1.tar",
		})
	}
	return newStatement(img, PredicateSLSA, p)
}

// redactedValue returns v as generic JSON (objects as maps, which encode
// with sorted keys, numbers kept exact) with every string holding a URL
// redacted: a spec's source URL may be pre-signed or carry a password, and
// a provenance is pushed next to the image for anyone who can pull it.
func redactedValue(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var g any
	if err := dec.Decode(&g); err != nil {
		return nil, err
	}
	return redactStrings(g), nil
}

func redactStrings(v any) any {
	switch t := v.(type) {
	case string:
		if strings.Contains(t, "://") {
			return RedactURI(t)
		}
	case map[string]any:
		for k, e := range t {
			t[k] = redactStrings(e)
		}
	case []any:
		for i, e := range t {
			t[i] = redactStrings(e)
		}
	}
	return v
}
