package engine

import (
	"context"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/filetree"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/source"
)

// Source kinds of generated layers, as image history names them.
const (
	kindFiles        = "files"
	kindConfigMapDir = "configMapDir"
	kindSecretDir    = "secretDir"
	kindSourceRef    = "sourceRef"
)

// generated reports whether kiln writes s's tarball itself.
func generated(s *kilnv1.Source) bool {
	return len(s.Files) > 0 || s.ConfigMapDir != nil || s.SecretDir != nil
}

// layerSource is the fetchable source of layer l. A files, configMapDir or
// secretDir source becomes the tarball filetree writes from the build's own
// inputs, carried as data like a ConfigMap key: the cache proof is then the
// sha256 of those bytes (proof.go), and the tarball goes through the same
// layer.Build as any other. Secret-bearing ones are data of kind secret.
func (e *Engine) layerSource(ctx context.Context, f *source.Fetcher, spec *kilnv1.ImageBuildSpec, l *kilnv1.Layer, in Inputs) (source.Spec, error) {
	s := l.Source
	if s.SourceRef != nil {
		return e.artifactSource(ctx, f, spec, l, in)
	}
	if !generated(s) {
		return sourceSpec(l.Name, s, l.Digest, in)
	}
	files, err := filesOf(l.Name, s, in)
	if err != nil {
		return source.Spec{}, err
	}
	opts, err := treeOptions(spec, l)
	if err != nil {
		return source.Spec{}, err
	}
	data, err := filetree.Tar(files, opts)
	if err != nil {
		return source.Spec{}, err
	}
	kind := source.KindConfigMap
	if s.HoldsSecret() {
		kind = source.KindSecret
	}
	return source.Spec{Name: l.Name, Digest: l.Digest, Data: data, DataKind: kind, DataRef: describe(s)}, nil
}

// filesOf lists the files of a generated source, their bytes read from the
// inputs. Errors name the entry, never its content.
func filesOf(name string, s *kilnv1.Source, in Inputs) ([]filetree.File, error) {
	switch {
	case s.ConfigMapDir != nil:
		return dirFiles(name, "ConfigMap", s.ConfigMapDir, in.ConfigMaps)
	case s.SecretDir != nil:
		return dirFiles(name, "Secret", s.SecretDir, in.Secrets)
	}
	out := make([]filetree.File, 0, len(s.Files))
	for i := range s.Files {
		f, err := fileOf(name, i, &s.Files[i], in)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func fileOf(name string, i int, e *kilnv1.FileEntry, in Inputs) (filetree.File, error) {
	ref := fmt.Sprintf("files[%d]", i)
	f := filetree.File{Path: e.Path, Ref: ref, UID: e.UID, GID: e.GID}
	var err error
	if f.Mode, err = filetree.ParseMode(e.Mode); err != nil {
		return f, failure.Permanent(failure.InvalidSpec, failure.Layerf(name, "%s: %v", ref, err))
	}
	switch {
	case e.Content != nil:
		f.Data = []byte(*e.Content)
	case e.SecretKeyRef != nil:
		f.Data, err = keyOf(in.Secrets, "Secret", e.SecretKeyRef)
	case e.ConfigMapKeyRef != nil:
		f.Data, err = keyOf(in.ConfigMaps, "ConfigMap", e.ConfigMapKeyRef)
	default:
		err = failure.Permanentf(failure.InvalidSpec, "has none of content, secretKeyRef or configMapKeyRef")
	}
	if err != nil {
		return f, failure.InLayer(name, fmt.Errorf("%s: %w", ref, err))
	}
	return f, nil
}

// dirFiles makes every key of a ConfigMap or Secret a file under the
// target directory, in key order.
func dirFiles(name, kind string, d *kilnv1.DirSource, objs map[string]map[string][]byte) ([]filetree.File, error) {
	obj, ok := objs[d.Name]
	if !ok {
		return nil, failure.InLayer(name, failure.Permanentf(failure.SourceNotFound, "%s %q not found in the ImageBuild's namespace", kind, d.Name))
	}
	if path.Clean(d.TargetDir) != d.TargetDir {
		return nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(name, "targetDir %q must be absolute and clean (want %q)", d.TargetDir, path.Clean(d.TargetDir)))
	}
	dir := strings.TrimSuffix(d.TargetDir, "/") // "/" takes the keys at the root
	out := make([]filetree.File, 0, len(obj))
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		// Not path.Join, which would clean a key "..": filetree refuses it.
		out = append(out, filetree.File{Path: dir + "/" + k, Ref: fmt.Sprintf("%s %s key %q", kind, d.Name, k), Data: obj[k]})
	}
	return out, nil
}

// treeOptions are a generated layer's defaults: the layer's fileMode,
// dirMode, uid and gid (for entries that set none), mtimes spec.created.
func treeOptions(spec *kilnv1.ImageBuildSpec, l *kilnv1.Layer) (filetree.Options, error) {
	o := filetree.Options{Layer: l.Name, Created: created(spec), UID: l.UID, GID: l.GID}
	var err error
	if o.FileMode, err = layerMode(l, "fileMode", l.FileMode); err != nil {
		return o, err
	}
	o.DirMode, err = layerMode(l, "dirMode", l.DirMode)
	return o, err
}

// overridesOf are the header rewrites layer l asks of the normalizer. A
// generated layer has none: its tarball is written with them already, and
// a rewrite would replace the modes its entries set.
func overridesOf(l *kilnv1.Layer) (layer.Overrides, error) {
	if generated(l.Source) {
		return layer.Overrides{}, nil
	}
	o := layer.Overrides{UID: l.UID, GID: l.GID}
	var err error
	if o.FileMode, err = layerMode(l, "fileMode", l.FileMode); err != nil {
		return o, err
	}
	if o.DirMode, err = layerMode(l, "dirMode", l.DirMode); err != nil {
		return o, err
	}
	if l.Source.SourceRef != nil {
		o = sourceRefOverrides(o)
	}
	return o, nil
}

func layerMode(l *kilnv1.Layer, field, s string) (*int64, error) {
	m, err := filetree.ParseMode(s)
	if err != nil {
		return nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(l.Name, "%s: %v", field, err))
	}
	return m, nil
}
