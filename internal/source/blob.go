package source

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/registry"
)

// openBlob fetches a blob from a registry. go-containerregistry does the
// auth handshake; the GET itself goes through the same retry loop, stream,
// watchdog and classification as URL sources. The reference's digest is
// always verified, declared or not.
func (f *Fetcher) openBlob(ctx context.Context, s Spec, want v1.Hash) (*Stream, error) {
	ref, pinned, u, err := f.blobTarget(s, want)
	if err != nil {
		return nil, err
	}
	what := "GET blob " + s.Blob
	return f.withRetries(ctx, s, func() (*Stream, error) {
		st := newStream(ctx, s, KindBlob, pinned, f.opts, noBody{})
		c, err := f.registryClient(st.ctx, s, ref)
		if err != nil {
			st.Close()
			return nil, err
		}
		req, err := http.NewRequestWithContext(st.ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			st.Close()
			return nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "blob %s: %v", s.Blob, err))
		}
		return f.startBody(st, c, req, what)
	})
}

// blobTarget parses a blob source: its reference, pinned digest and blob
// URL, vetted by the host policy and checked against a declared digest.
func (f *Fetcher) blobTarget(s Spec, want v1.Hash) (name.Digest, v1.Hash, *url.URL, error) {
	var nameOpts []name.Option
	if f.opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.NewDigest(s.Blob, nameOpts...)
	if err != nil {
		return ref, v1.Hash{}, nil, failure.Permanent(failure.InvalidSpec,
			failure.Layerf(s.Name, "blob %q is not a digest reference (registry/repository@sha256:<hex>): %v", s.Blob, err))
	}
	pinned, err := v1.NewHash(ref.DigestStr())
	if err != nil || pinned.Algorithm != "sha256" {
		return ref, v1.Hash{}, nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "blob %q: only sha256 digests are supported", s.Blob))
	}
	if want != (v1.Hash{}) && want != pinned {
		return ref, v1.Hash{}, nil, failure.Permanent(failure.InvalidSpec,
			failure.Layerf(s.Name, "spec declares digest %s but blob reference pins %s", want, pinned))
	}
	u := &url.URL{
		Scheme: ref.Context().Registry.Scheme(),
		Host:   ref.Context().RegistryStr(),
		Path:   fmt.Sprintf("/v2/%s/blobs/%s", ref.Context().RepositoryStr(), ref.DigestStr()),
	}
	if err := f.blobPolicy.CheckURL(u); err != nil {
		return ref, v1.Hash{}, nil, failure.Permanent(failure.SourceForbidden, failure.Layerf(s.Name, "refusing blob %s: %v", s.Blob, err))
	}
	return ref, pinned, u, nil
}

// registryClient authenticates to ref's registry (ping + token exchange).
func (f *Fetcher) registryClient(ctx context.Context, s Spec, ref name.Digest) (*http.Client, error) {
	auth, err := authn.Resolve(ctx, f.opts.Keychain, ref.Context())
	if err != nil {
		return nil, failure.Permanent(failure.Unauthorized, failure.Layerf(s.Name, "resolving credentials for %s: %v", ref.Context(), err))
	}
	rt, err := transport.NewWithContext(ctx, ref.Context().Registry, auth, f.blobRT,
		[]string{ref.Context().Scope(transport.PullScope)})
	if err != nil {
		return nil, doError(s, "authenticating to "+ref.Context().RegistryStr(), err)
	}
	return &http.Client{Transport: rt, CheckRedirect: f.blobPolicy.CheckRedirect(maxRedirects, errTooManyRedirects, nil)}, nil
}

// blobTransport is the transport of registry pulls: the caller's, or the
// one every registry connection of kiln uses (registry.Transport), which
// also checks addresses after DNS resolution. Either way every request,
// token realm and redirect is vetted by the registry host policy.
func (f *Fetcher) blobTransport() http.RoundTripper {
	if f.opts.Transport == nil {
		return registry.Transport(registry.Options{Policy: &f.blobPolicy})
	}
	return f.blobPolicy.RoundTripper(f.opts.Transport)
}
