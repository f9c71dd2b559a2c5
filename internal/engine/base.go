package engine

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/source"
)

// resolveBase returns the base image and the bytes fetched to get it.
func (e *Engine) resolveBase(ctx context.Context, spec *kilnv1.ImageBuildSpec, in Inputs, p v1.Platform, o registry.Options) (*image.Base, int64, error) {
	if spec.Base != nil && spec.Base.Archive != nil {
		return e.archiveBase(ctx, spec.Base.Archive, in, p, o)
	}
	ref := baseImage(spec)
	if ref == kilnv1.ScratchImage {
		return image.Scratch(p), 0, nil
	}
	b, err := image.FromRegistry(ctx, ref, p, registry.RemoteOptions(ctx, baseOptions(o))...)
	if err != nil {
		return nil, 0, fmt.Errorf("resolving base %s: %w", ref, err)
	}
	return b, 0, nil
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
// digest, archive and scratch bases never move.
func TagBase(spec *kilnv1.ImageBuildSpec) string {
	b := spec.Base
	if b == nil || b.Image == "" || b.Image == kilnv1.ScratchImage {
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

func (e *Engine) archiveBase(ctx context.Context, a *kilnv1.Archive, in Inputs, p v1.Platform, o registry.Options) (*image.Base, int64, error) {
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
	b, err := image.FromArchive(ctx, stream, e.Store, p, "archive "+describe(&a.Source), image.ArchiveOptions{Limits: e.Limits})
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
