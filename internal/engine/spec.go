package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/version"
)

// created returns spec.created or the epoch.
func created(spec *kilnv1.ImageBuildSpec) time.Time {
	if spec.Created != nil {
		return spec.Created.UTC()
	}
	return version.Epoch
}

// baseImage returns the base reference, "scratch" when the spec has no base.
func baseImage(spec *kilnv1.ImageBuildSpec) string {
	if spec.Base == nil || (spec.Base.Image == "" && spec.Base.Archive == nil) {
		return kilnv1.ScratchImage
	}
	return spec.Base.Image
}

func platform(spec *kilnv1.ImageBuildSpec) string {
	if spec.Base == nil {
		return ""
	}
	return spec.Base.Platform
}

// normalizeMode is the layer's own mode, else the spec-wide default, else minimal.
func normalizeMode(spec *kilnv1.ImageBuildSpec, l *kilnv1.Layer) layer.Mode {
	m := l.Normalize
	if m == "" {
		m = spec.Normalize
	}
	if m == kilnv1.NormalizeReproducible {
		return layer.Reproducible
	}
	return layer.Minimal
}

func outputCompression(spec *kilnv1.ImageBuildSpec) compression.Algorithm {
	if spec.Output != nil && spec.Output.Compression == kilnv1.OutputZstd {
		return compression.Zstd
	}
	return compression.Gzip
}

func declaredCompression(l *kilnv1.Layer) (compression.Algorithm, error) {
	alg, err := compression.Parse(string(l.Compression))
	if err != nil {
		return "", failure.Permanent(failure.InvalidSpec, failure.Layerf(l.Name, "%v", err))
	}
	return alg, nil
}

// inputRecord is what the inputDigest hashes: everything that determines the
// image bytes, and nothing that does not (target, tags, credentials, suspend).
type inputRecord struct {
	Engine      string                `json:"engine"`
	Base        string                `json:"base"`
	BaseDigest  string                `json:"baseDigest,omitempty"`
	Platform    string                `json:"platform,omitempty"`
	Layers      []layerInput          `json:"layers"`
	Config      *kilnv1.ImageConfig   `json:"config,omitempty"`
	Annotations map[string]string     `json:"annotations,omitempty"`
	Created     metav1.Time           `json:"created"`
	Output      compression.Algorithm `json:"output"`
}

type layerInput struct {
	Name         string `json:"name"`
	SourceDigest string `json:"sourceDigest"`
	Compression  string `json:"compression,omitempty"`
	Normalize    string `json:"normalize"`
	DiffID       string `json:"diffID,omitempty"`
}

// InputDigest hashes the normalized spec, the resolved input digests and the
// engine version. Two builds with the same inputDigest produce the same image.
// sourceDigests holds one entry per layer: its source digest, or for a
// Secret layer its blob digest and diffID (never the sha256 of the Secret
// bytes, see inputOf).
func InputDigest(spec *kilnv1.ImageBuildSpec, baseDigest string, sourceDigests []string) string {
	rec := inputRecord{
		Engine:      version.Engine,
		Base:        baseImage(spec),
		BaseDigest:  baseDigest,
		Platform:    platform(spec),
		Config:      spec.Config,
		Annotations: spec.Annotations,
		Created:     metav1.NewTime(created(spec)),
		Output:      outputCompression(spec),
	}
	if spec.Base != nil && spec.Base.Archive != nil {
		rec.Base = "archive"
	}
	for i := range spec.Layers {
		l := &spec.Layers[i]
		li := layerInput{Name: l.Name, Compression: string(l.Compression), DiffID: l.DiffID,
			Normalize: string(normalizeMode(spec, l))}
		if i < len(sourceDigests) {
			li.SourceDigest = sourceDigests[i]
		}
		rec.Layers = append(rec.Layers, li)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		// Only plain data is marshalled; failure here is a programming error.
		panic(fmt.Sprintf("marshalling input record: %v", err))
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
