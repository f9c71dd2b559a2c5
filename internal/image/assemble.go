package image

import (
	"fmt"
	"maps"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/version"
)

// Config is the image configuration (ImageBuild.spec.config, converted by
// the engine: this package knows no API types).
type Config struct {
	Env                   []EnvVar
	Entrypoint, Cmd       []string
	EntrypointSet, CmdSet bool // set even to an empty list: it then clears the base's
	WorkingDir, User      string
	Labels                map[string]string
	ExposedPorts, Volumes []string
	StopSignal            string
}

// Spec is everything Assemble needs.
type Spec struct {
	Base        *Base
	Additions   []Addition
	Config      Config
	Annotations map[string]string
	Created     time.Time // zero means the Unix epoch
	Zstd        bool      // output compression is zstd
}

// Assembled is the final image, not pushed yet.
type Assembled struct {
	Image        v1.Image
	Digest       v1.Hash // manifest digest
	ConfigDigest v1.Hash
	MediaType    types.MediaType
	Notes        []string

	// layerNames names each layer of Image for Verify's messages.
	layerNames []string
}

// Annotation keys kiln sets on manifests built on a registry base.
const (
	AnnotationBaseName   = "org.opencontainers.image.base.name"
	AnnotationBaseDigest = "org.opencontainers.image.base.digest"
)

// Note texts, stable so that users can grep status for them.
const (
	NoteZstdOnDocker        = "converted Docker base to OCI media types for zstd layers"
	NoteAnnotationsOnDocker = "converted Docker base to OCI media types for manifest annotations (Docker manifests have none)"
)

// Assemble builds the final image in one pass: one config, one manifest,
// nothing pushed. The base's layers are referenced as they are (foreign
// layers keep their media type and URLs); only media types change, and only
// when a Docker base must become OCI (zstd layers, or annotations).
func Assemble(s Spec) (*Assembled, error) {
	if s.Base == nil || s.Base.Image == nil {
		return nil, failure.Permanentf(failure.InvalidSpec, "assembling: no base image")
	}
	base, err := readBase(s.Base)
	if err != nil {
		return nil, err
	}
	created := s.Created.UTC()
	if s.Created.IsZero() {
		created = version.Epoch
	}
	a := &Assembled{}
	docker := base.manifest.MediaType == types.DockerManifestSchema2
	if docker && (s.Zstd || anyZstd(s.Additions)) {
		docker = false
		a.Notes = append(a.Notes, NoteZstdOnDocker)
	} else if docker && len(s.Annotations) > 0 {
		docker = false
		a.Notes = append(a.Notes, NoteAnnotationsOnDocker)
	}

	layers, descs, names := baseLayers(base, docker)
	for _, add := range s.Additions {
		mt, err := additionMediaType(add, docker, s.Zstd)
		if err != nil {
			return nil, err
		}
		layers = append(layers, StoreLayer(add, mt))
		descs = append(descs, v1.Descriptor{MediaType: mt, Size: add.Size, Digest: add.Digest})
		names = append(names, "layer "+add.Name)
	}

	cf := base.config.DeepCopy()
	if err := applyConfig(cf, s.Config); err != nil {
		return nil, err
	}
	addHistory(cf, len(base.layers), s.Additions, created)
	cf.Created = v1.Time{Time: created}
	raw, err := encodeConfig(cf)
	if err != nil {
		return nil, err
	}

	mt, cmt := types.OCIManifestSchema1, types.OCIConfigJSON
	var ann map[string]string
	if docker {
		mt, cmt = types.DockerManifestSchema2, types.DockerConfigJSON
	} else {
		ann = annotations(s.Base, s.Annotations)
	}
	img, err := newMemImage(mt, cmt, raw, layers, descs, ann)
	if err != nil {
		return nil, fmt.Errorf("assembling: %w", err)
	}
	a.Image, a.MediaType, a.layerNames = img, mt, names
	a.ConfigDigest = img.parsed.Config.Digest
	if a.Digest, err = img.Digest(); err != nil {
		return nil, fmt.Errorf("assembling: %w", err)
	}
	return a, nil
}

// baseParts is what Assemble reads from the base, once.
type baseParts struct {
	config   *v1.ConfigFile
	manifest *v1.Manifest
	layers   []v1.Layer
}

func readBase(b *Base) (*baseParts, error) {
	cf, err := b.Image.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config of base %s: %w", b.Name, err)
	}
	m, err := b.Image.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading the manifest of base %s: %w", b.Name, err)
	}
	ls, err := b.Image.Layers()
	if err != nil {
		return nil, fmt.Errorf("reading the layers of base %s: %w", b.Name, err)
	}
	if len(ls) != len(m.Layers) || len(m.Layers) != len(cf.RootFS.DiffIDs) {
		return nil, failure.Permanentf(failure.InvalidSpec,
			"base %s is inconsistent: its manifest lists %d layers but its config has %d diff_ids",
			b.Name, len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	return &baseParts{config: cf, manifest: m, layers: ls}, nil
}

// baseLayers returns the base's layers and their manifest descriptors,
// converted to OCI media types when the base is Docker and the image is not.
func baseLayers(base *baseParts, docker bool) ([]v1.Layer, []v1.Descriptor, []string) {
	layers := make([]v1.Layer, 0, len(base.layers))
	descs := make([]v1.Descriptor, 0, len(base.layers))
	names := make([]string, 0, len(base.layers))
	for i, l := range base.layers {
		d := base.manifest.Layers[i]
		if !docker {
			if mt := ociMediaType(d.MediaType); mt != d.MediaType {
				d.MediaType = mt
				l = retype(l, mt)
			}
		}
		layers, descs = append(layers, l), append(descs, d)
		names = append(names, fmt.Sprintf("base layer %d", i+1))
	}
	return layers, descs, names
}

// ociMediaType maps a Docker layer media type to its OCI equivalent.
func ociMediaType(mt types.MediaType) types.MediaType {
	switch mt {
	case types.DockerLayer:
		return types.OCILayer
	case types.DockerForeignLayer:
		return types.OCIRestrictedLayer
	case types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	}
	return mt
}

func anyZstd(adds []Addition) bool {
	for _, a := range adds {
		if a.MediaType == types.OCILayerZStd {
			return true
		}
	}
	return false
}

// additionMediaType is the media type an added layer gets in the manifest:
// the pipeline's OCI type, or its Docker twin in a Docker image.
func additionMediaType(a Addition, docker, zstd bool) (types.MediaType, error) {
	mt := a.MediaType
	if mt == "" {
		mt = types.OCILayer
		if zstd {
			mt = types.OCILayerZStd
		}
	}
	if !docker {
		return mt, nil
	}
	switch mt {
	case types.OCILayer, types.DockerLayer:
		return types.DockerLayer, nil
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return types.DockerUncompressedLayer, nil
	}
	return "", failure.Permanentf(failure.InvalidSpec,
		"layer %s: media type %s cannot be used in a Docker v2 schema 2 image", a.Name, mt)
}

// annotations are the spec's plus the base's name and digest for a registry
// base. The spec's win: a user may deliberately name the base differently.
func annotations(b *Base, spec map[string]string) map[string]string {
	out := map[string]string{}
	if !b.Scratch && !b.Archive && b.Digest != (v1.Hash{}) {
		out[AnnotationBaseName] = b.Name
		out[AnnotationBaseDigest] = b.Digest.String()
	}
	maps.Copy(out, spec)
	return out
}

// applyConfig merges the spec's configuration onto the base's.
func applyConfig(cf *v1.ConfigFile, c Config) error {
	env, err := mergeEnv(cf.Config.Env, c.Env)
	if err != nil {
		return err
	}
	cf.Config.Env = env
	if c.EntrypointSet {
		cf.Config.Entrypoint = nilIfEmpty(c.Entrypoint)
		if !c.CmdSet {
			// Docker semantics: an inherited CMD was written for the old
			// entrypoint and would become its arguments.
			cf.Config.Cmd = nil
		}
	}
	if c.CmdSet {
		cf.Config.Cmd = nilIfEmpty(c.Cmd)
	}
	if c.WorkingDir != "" {
		cf.Config.WorkingDir = c.WorkingDir
	}
	if c.User != "" {
		cf.Config.User = c.User
	}
	if len(c.Labels) > 0 {
		cf.Config.Labels = mergeMap(cf.Config.Labels, c.Labels)
	}
	if err := addPorts(cf, c.ExposedPorts); err != nil {
		return err
	}
	for _, v := range c.Volumes {
		if v == "" {
			return failure.Permanentf(failure.InvalidSpec, "volumes: empty path")
		}
		if cf.Config.Volumes == nil {
			cf.Config.Volumes = map[string]struct{}{}
		}
		cf.Config.Volumes[v] = struct{}{}
	}
	if c.StopSignal != "" {
		cf.Config.StopSignal = c.StopSignal
	}
	return nil
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}

func mergeMap(base, add map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(add))
	maps.Copy(out, base)
	maps.Copy(out, add)
	return out
}

// addPorts adds "port[/proto]" entries; a bare port means tcp, as in Docker.
func addPorts(cf *v1.ConfigFile, ports []string) error {
	for _, p := range ports {
		port, proto, hasProto := strings.Cut(p, "/")
		if !hasProto {
			proto = "tcp"
		}
		if !validPort(port) || (proto != "tcp" && proto != "udp" && proto != "sctp") {
			return failure.Permanentf(failure.InvalidSpec,
				"exposedPorts: %q is not port[/tcp|udp|sctp] (e.g. 8080/tcp)", p)
		}
		if cf.Config.ExposedPorts == nil {
			cf.Config.ExposedPorts = map[string]struct{}{}
		}
		cf.Config.ExposedPorts[port+"/"+proto] = struct{}{}
	}
	return nil
}

// validPort accepts a port number or a range "8000-8010", as Docker does.
func validPort(s string) bool {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	var a, b int
	if _, err := fmt.Sscanf(lo, "%d", &a); err != nil || fmt.Sprint(a) != lo {
		return false
	}
	if _, err := fmt.Sscanf(hi, "%d", &b); err != nil || fmt.Sprint(b) != hi {
		return false
	}
	return a >= 1 && b <= 65535 && a <= b
}

// addHistory appends one entry per added layer. When the base's history
// does not account for all its layers (many tools omit it), entries are
// added for them first, so that the n-th non-empty entry describes the n-th
// layer, as runtimes and `docker history` assume.
func addHistory(cf *v1.ConfigFile, baseLayers int, adds []Addition, created time.Time) {
	described := 0
	for _, h := range cf.History {
		if !h.EmptyLayer {
			described++
		}
	}
	for ; described < baseLayers; described++ {
		cf.History = append(cf.History, v1.History{Created: cf.Created, CreatedBy: "kiln: base layer without history"})
	}
	// History names the layer and the kind of its source, never where the
	// bytes came from. Anyone who can pull the image reads its config, so a
	// URL's userinfo or pre-signed query must never be there; and not even
	// the redacted URL (or a Secret's or ConfigMap's name): a path can hold a
	// token too, and the image's digest must depend on the bytes, not on
	// where they are hosted. The inputDigest hashes source digests, not
	// locations, so moving an artifact to another mirror, rotating the
	// credentials in its URL or renaming its ConfigMap keeps the same
	// inputDigest and must keep the same image. The location is in the
	// ImageBuild, for those allowed to read it.
	for _, a := range adds {
		cf.History = append(cf.History, v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: fmt.Sprintf("kiln: layer %s from %s", a.Name, a.SourceKind),
		})
	}
	diffIDs := make([]v1.Hash, 0, len(cf.RootFS.DiffIDs)+len(adds))
	diffIDs = append(diffIDs, cf.RootFS.DiffIDs...)
	for _, a := range adds {
		diffIDs = append(diffIDs, a.DiffID)
	}
	cf.RootFS.Type = "layers"
	cf.RootFS.DiffIDs = diffIDs
}
