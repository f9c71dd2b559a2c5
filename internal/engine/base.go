package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/source"
)

// resolveBases returns the base of every child, in order, and the bytes
// fetched to get them. Children on the same base (spec.base, or equal
// platforms[].base overrides) resolve it once: one GET of an index, one
// fetch of an archive.
func (e *Engine) resolveBases(ctx context.Context, spec *kilnv1.ImageBuildSpec, children []child, in Inputs, o registry.Options) ([]*image.Base, int64, error) {
	out := make([]*image.Base, len(children))
	groups, order := map[string][]int{}, []string(nil)
	for i, c := range children {
		k := baseKey(c.spec.Base)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	release := func() {
		for _, b := range out {
			if b != nil {
				b.Release()
			}
		}
	}
	var total int64
	for _, k := range order {
		idx := groups[k]
		ps := make([]v1.Platform, len(idx))
		for j, i := range idx {
			ps[j] = children[i].platform
		}
		bs, n, err := e.resolveBase(ctx, children[idx[0]].spec, in, ps, o)
		total += n
		if err != nil {
			release()
			return nil, total, inPlatforms(requestedOf(children, idx), err)
		}
		for j, i := range idx {
			out[i] = bs[j]
		}
	}
	return out, total, nil
}

// baseKey identifies a child's base apart from its platform.
func baseKey(b *kilnv1.Base) string {
	if b == nil {
		return kilnv1.ScratchImage
	}
	k := b.DeepCopy()
	k.Platform, k.PollInterval, k.UpdatePolicy = "", nil, ""
	raw, err := json.Marshal(k)
	if err != nil {
		panic(fmt.Sprintf("marshalling a base: %v", err)) // plain data
	}
	return string(raw)
}

func requestedOf(children []child, idx []int) []string {
	out := make([]string, 0, len(idx))
	for _, i := range idx {
		if children[i].requested != "" {
			out = append(out, children[i].requested)
		}
	}
	return out
}

// inPlatforms names the platforms an error of a multi-platform build
// belongs to; a single-platform build (whose child has no requested
// platform, so platforms is empty) keeps its errors as they are.
func inPlatforms(platforms []string, err error) error {
	if len(platforms) == 0 {
		return err
	}
	word := "platform"
	if len(platforms) > 1 {
		word = "platforms"
	}
	return fmt.Errorf("%s %s: %w", word, strings.Join(platforms, ", "), err)
}

// resolveBase returns spec's base for each of ps and the bytes fetched to
// get them.
func (e *Engine) resolveBase(ctx context.Context, spec *kilnv1.ImageBuildSpec, in Inputs, ps []v1.Platform, o registry.Options) ([]*image.Base, int64, error) {
	if spec.Base != nil && spec.Base.Archive != nil {
		return e.archiveBase(ctx, spec.Base.Archive, in, ps, o)
	}
	ref := baseImage(spec)
	if ref == kilnv1.ScratchImage {
		out := make([]*image.Base, len(ps))
		for i, p := range ps {
			out[i] = image.Scratch(p)
		}
		return out, 0, nil
	}
	bs, err := image.FromRegistryPlatforms(ctx, ref, ps, registry.RemoteOptions(ctx, baseOptions(o))...)
	if err != nil {
		return nil, 0, fmt.Errorf("resolving base %s: %w", ref, err)
	}
	return bs, 0, nil
}

// baseOptions are the registry options for the base registry: the same
// transport, credentials and CA bundle as the target, but never the
// target's insecure flag, which is the target registry's own. The build's
// resolution and ResolveBase both go through here.
func baseOptions(o registry.Options) registry.Options {
	o.Insecure = false
	return o
}

// TagBase returns spec.base.image when it is a registry tag, the one kind of
// base that can move under the same reference (drift polling), else "":
// digest, archive and scratch bases never move, and a spec.base that every
// platform overrides is not used at all.
func TagBase(spec *kilnv1.ImageBuildSpec) string {
	b := spec.Base
	if b == nil || b.Image == "" || b.Image == kilnv1.ScratchImage || !specBaseUsed(spec) {
		return ""
	}
	ref, err := name.ParseReference(b.Image)
	if err != nil {
		return ""
	}
	if _, isDigest := ref.(name.Digest); isDigest {
		return ""
	}
	return b.Image
}

func (e *Engine) archiveBase(ctx context.Context, a *kilnv1.Archive, in Inputs, ps []v1.Platform, o registry.Options) ([]*image.Base, int64, error) {
	src, err := sourceSpec("base", &a.Source, a.Digest, in)
	if err != nil {
		return nil, 0, err
	}
	f := e.fetcher(o)
	stream, err := f.Open(ctx, src)
	if err != nil {
		return nil, 0, fmt.Errorf("fetching base archive: %w", err)
	}
	defer func() { _ = stream.Close() }()
	b, err := image.FromArchivePlatforms(ctx, stream, e.Store, ps, "archive "+describe(&a.Source), image.ArchiveOptions{Limits: e.Limits})
	if err != nil {
		return nil, stream.Size(), fmt.Errorf("reading base archive: %w", err)
	}
	return b, stream.Size(), nil
}

// sourceSpec turns an API source into a fetchable one, reading ConfigMap and
// Secret bytes from the caller's inputs (never from anywhere else).
func sourceSpec(layerName string, s *kilnv1.Source, digest string, in Inputs) (source.Spec, error) {
	spec := source.Spec{Name: layerName, Digest: digest}
	switch {
	case s.URL != "":
		spec.URL = s.URL
		if s.HeadersFrom != nil {
			h, ok := in.Secrets[s.HeadersFrom.Name]
			if !ok {
				return spec, failure.Permanent(failure.SourceNotFound, failure.Layerf(layerName, "headers Secret %q not found in the ImageBuild's namespace", s.HeadersFrom.Name))
			}
			spec.Headers = map[string]string{}
			for k, v := range h {
				spec.Headers[k] = string(v)
			}
		}
	case s.ConfigMap != nil:
		data, err := keyOf(in.ConfigMaps, "ConfigMap", s.ConfigMap)
		if err != nil {
			return spec, failure.InLayer(layerName, err)
		}
		spec.Data, spec.DataKind, spec.DataRef = data, source.KindConfigMap, fmt.Sprintf("configMap %s key %s", s.ConfigMap.Name, s.ConfigMap.Key)
	case s.Secret != nil:
		data, err := keyOf(in.Secrets, "Secret", s.Secret)
		if err != nil {
			return spec, failure.InLayer(layerName, err)
		}
		spec.Data, spec.DataKind, spec.DataRef = data, source.KindSecret, fmt.Sprintf("secret %s key %s", s.Secret.Name, s.Secret.Key)
	case s.Blob != "":
		spec.Blob = s.Blob
	case generated(s) || s.SourceRef != nil:
		return spec, failure.Permanent(failure.InvalidSpec, failure.Layerf(layerName, "a %s source is a layer's only: a base archive is fetched", sourceKind(s)))
	default:
		return spec, failure.Permanent(failure.InvalidSpec, failure.Layerf(layerName, "source has none of url, configMap, secret or blob"))
	}
	return spec, nil
}

// keyOf returns one key of a ConfigMap or Secret from the inputs; the
// caller names the referrer in the error (`layer "app"`, `target.caBundle`).
func keyOf(objs map[string]map[string][]byte, kind string, sel *kilnv1.KeySelector) ([]byte, error) {
	obj, ok := objs[sel.Name]
	if !ok {
		return nil, failure.Permanentf(failure.SourceNotFound, "%s %q not found in the ImageBuild's namespace", kind, sel.Name)
	}
	data, ok := obj[sel.Key]
	if !ok {
		return nil, failure.Permanentf(failure.SourceNotFound, "%s %q has no key %q", kind, sel.Name, sel.Key)
	}
	return data, nil
}

// describe names a source for messages and status (a base archive's name):
// a URL through egress.RedactURL, so no userinfo or query is ever shown.
// Image history uses sourceKind instead (see image.Addition).
func describe(s *kilnv1.Source) string {
	switch {
	case s.URL != "":
		return "url " + egress.RedactURL(s.URL)
	case s.ConfigMap != nil:
		return "configMap " + s.ConfigMap.Name + "/" + s.ConfigMap.Key
	case s.Secret != nil:
		return "secret " + s.Secret.Name + "/" + s.Secret.Key
	case s.Blob != "":
		return "blob " + s.Blob
	case len(s.Files) > 0:
		return fmt.Sprintf("files (%d)", len(s.Files))
	case s.ConfigMapDir != nil:
		return "configMapDir " + s.ConfigMapDir.Name
	case s.SecretDir != nil:
		return "secretDir " + s.SecretDir.Name
	case s.SourceRef != nil:
		return "sourceRef " + s.SourceRef.String()
	}
	return "unknown source"
}

// sourceKind is what image history says about a layer's source: its kind
// only, so that the image depends on the bytes, not on where they live.
func sourceKind(s *kilnv1.Source) string {
	switch {
	case s.URL != "":
		return string(source.KindURL)
	case s.ConfigMap != nil:
		return string(source.KindConfigMap)
	case s.Secret != nil:
		return string(source.KindSecret)
	case s.Blob != "":
		return string(source.KindBlob)
	case len(s.Files) > 0:
		return kindFiles
	case s.ConfigMapDir != nil:
		return kindConfigMapDir
	case s.SecretDir != nil:
		return kindSecretDir
	case s.SourceRef != nil:
		return kindSourceRef
	}
	return "unknown source"
}

// fetcher returns a source fetcher that pulls registry blobs with the same
// credentials, TLS roots (target.caBundle) and host policy as the push:
// registry.Transport is the one place they are applied.
func (e *Engine) fetcher(o registry.Options) *source.Fetcher {
	so := e.Source
	if o.Keychain != nil {
		so.Keychain = o.Keychain
	}
	if so.Transport == nil {
		so.Transport = registry.Transport(o)
	}
	return source.NewFetcher(so)
}

// specBaseUsed reports whether some image of the build is built on
// spec.base: always for a single image, for an index unless every platform
// has its own base.
func specBaseUsed(spec *kilnv1.ImageBuildSpec) bool {
	if len(spec.Platforms) == 0 {
		return true
	}
	for i := range spec.Platforms {
		if spec.Platforms[i].Base == nil {
			return true
		}
	}
	return false
}
