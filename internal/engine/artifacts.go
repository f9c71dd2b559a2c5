package engine

import (
	"context"
	"fmt"
	"io"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/artifact"
	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/filetree"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/source"
)

// Artifact is a Flux source's artifact as the caller resolved it from the
// source object's status (the controller), or a local directory standing
// in for it (kiln build --source NAME=DIR).
type Artifact struct {
	// URL is where source-controller serves the artifact (a tar.gz),
	// fetched like any URL source (host policy, retries, size cap).
	URL string
	// Digest is status.artifact.digest ("sha256:..."), verified while the
	// artifact streams.
	Digest string
	// Revision is status.artifact.revision, recorded in the layer's status
	// and the image's org.opencontainers.image.revision.
	Revision string
	// SourceURL is the source object's spec.url, the image's
	// org.opencontainers.image.source (shown through egress.RedactURL).
	SourceURL string
	// Dir, when set, is read instead of URL.
	Dir string
}

// ArtifactKey is the key of Inputs.Artifacts for a sourceRef.
func ArtifactKey(r kilnv1.SourceReference) string { return r.String() }

// OCI annotations kiln derives from a sourceRef artifact.
const (
	AnnotationSource   = "org.opencontainers.image.source"
	AnnotationRevision = "org.opencontainers.image.revision"
)

// Defaults of a sourceRef layer's overrides: source-controller stores files
// 0600 and directories 0750, which a non-root container cannot read.
var (
	sourceRefFileMode int64 = 0o644
	sourceRefDirMode  int64 = 0o755
	rootID            int64
)

// sourceRefOverrides are the header rewrites of a sourceRef layer: the
// layer's own, else readable modes and root ownership.
func sourceRefOverrides(o layer.Overrides) layer.Overrides {
	if o.FileMode == nil {
		o.FileMode = &sourceRefFileMode
	}
	if o.DirMode == nil {
		o.DirMode = &sourceRefDirMode
	}
	if o.UID == nil {
		o.UID = &rootID
	}
	if o.GID == nil {
		o.GID = &rootID
	}
	return o
}

// artifactSource reads the artifact of a sourceRef layer (downloading and
// verifying it, or reading the directory standing in for it), selects
// source.path and writes its files under source.targetDir into a
// deterministic tarball, carried as data like a files source's. The
// entries keep the artifact's modes: the layer's overrides (whose defaults
// are sourceRefOverrides) rewrite them in the normalizer, as for any
// tarball.
func (e *Engine) artifactSource(ctx context.Context, f *source.Fetcher, spec *kilnv1.ImageBuildSpec, l *kilnv1.Layer, in Inputs) (source.Spec, error) {
	s := l.Source
	a, ok := in.Artifacts[ArtifactKey(*s.SourceRef)]
	if !ok {
		return source.Spec{}, failure.InLayer(l.Name, failure.Permanentf(failure.SourceNotFound, "%s %q: no artifact was resolved for it", s.SourceRef.Kind, s.SourceRef.Name))
	}
	lim := artifact.Limits{MaxEntries: e.Limits.WithDefaults().MaxEntries}
	var tree *artifact.Tree
	var err error
	if a.Dir != "" {
		tree, err = artifact.ReadDir(a.Dir, lim)
	} else {
		tree, err = e.fetchArtifact(ctx, f, l.Name, a, lim)
	}
	if err != nil {
		return source.Spec{}, failure.InLayer(l.Name, err)
	}
	files, err := tree.Files(l.Name, s.Path, s.TargetDir)
	if err != nil {
		return source.Spec{}, err
	}
	data, err := filetree.Tar(files, filetree.Options{Layer: l.Name, Created: created(spec)})
	if err != nil {
		return source.Spec{}, err
	}
	return source.Spec{Name: l.Name, Digest: l.Digest, Data: data, DataKind: source.KindBytes, DataRef: describe(s)}, nil
}

// fetchArtifact downloads a tar.gz artifact and reads its files. The
// stream is read to its end, so a digest other than artifact.digest is a
// DigestMismatch whatever the tar held.
func (e *Engine) fetchArtifact(ctx context.Context, f *source.Fetcher, name string, a Artifact, lim artifact.Limits) (*artifact.Tree, error) {
	stream, err := f.Open(ctx, source.Spec{Name: name, URL: a.URL, Digest: a.Digest})
	if err != nil {
		return nil, err
	}
	defer func() { _ = stream.Close() }()
	lm := e.Limits.WithDefaults()
	rc, _, err := compression.Open(stream, compression.Auto, compression.ReaderOptions{XzMemoryLimit: lm.MaxDecoderMemory, ZstdMemoryLimit: lm.MaxDecoderMemory})
	if err != nil {
		return nil, fmt.Errorf("opening the artifact: %w", err)
	}
	defer func() { _ = rc.Close() }()
	tree, err := artifact.ReadTar(rc, lim)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return nil, fmt.Errorf("reading the artifact: %w", err)
	}
	return tree, nil
}

// withSourceAnnotations returns ib with the annotations of its first
// sourceRef layer's artifact (org.opencontainers.image.source and
// .revision) added where the spec sets none; ib itself when there are
// none to add. They are part of the spec from then on, so the inputDigest
// covers them.
func withSourceAnnotations(ib *kilnv1.ImageBuild, in Inputs) *kilnv1.ImageBuild {
	for i := range ib.Spec.Layers {
		s := ib.Spec.Layers[i].Source
		if s == nil || s.SourceRef == nil {
			continue
		}
		a, ok := in.Artifacts[ArtifactKey(*s.SourceRef)]
		if !ok {
			return ib
		}
		add := map[string]string{}
		if a.SourceURL != "" {
			add[AnnotationSource] = egress.RedactURL(a.SourceURL)
		}
		if a.Revision != "" {
			add[AnnotationRevision] = a.Revision
		}
		out := ib
		for k, v := range add {
			if _, set := ib.Spec.Annotations[k]; set {
				continue
			}
			if out == ib {
				out = ib.DeepCopy()
				if out.Spec.Annotations == nil {
					out.Spec.Annotations = map[string]string{}
				}
			}
			out.Spec.Annotations[k] = v
		}
		return out
	}
	return ib
}
