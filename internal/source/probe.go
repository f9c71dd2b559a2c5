package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
)

// Proof is what a source's server answered to a request made with the
// requester's own identity (its headers, its registry credentials), without
// the body. A caller holding bytes fetched earlier from the same source uses
// it to decide whether this requester may have them too: the cache saves
// work, it never grants access.
type Proof struct {
	// NotModified is set when a conditional request was answered 304: the
	// server says the requester's representation is the one validated.
	NotModified bool
	// Validators are the response's ETag and Last-Modified.
	Validators Validators
	// Length is the response's Content-Length, -1 when it sent none.
	Length int64
	// Digest is a registry's Docker-Content-Digest, "" when it sent none.
	Digest string
}

// ProveURL asks a URL source's server, with s.Headers, whether the requester
// may fetch it: a GET made conditional by s.Validators whose body is never
// read (a 304, or the headers of a 200). GET rather than HEAD because a
// presigned URL's signature covers the method. Errors are classified like
// Open's (401/403 Unauthorized, 404 SourceNotFound, network trouble
// transient after the same retries); an unreachable server is an error,
// never a proof.
func (f *Fetcher) ProveURL(ctx context.Context, s Spec) (Proof, error) {
	if s.Kind() != KindURL {
		return Proof{}, failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "proving access to a %s source over HTTP", s.Kind()))
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return Proof{}, failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "invalid URL %s: %v", egress.RedactURL(s.URL), err))
	}
	if err := f.policy.CheckURL(u); err != nil {
		return Proof{}, failure.Permanent(failure.SourceForbidden, failure.Layerf(s.Name, "refusing %s: %v", egress.RedactURL(s.URL), err))
	}
	what := "GET " + egress.RedactURL(s.URL)
	var p Proof
	_, err = f.withRetries(ctx, s, func() (*Stream, error) {
		req, err := newURLRequest(ctx, s)
		if err != nil {
			return nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "invalid URL %s: %v", egress.RedactURL(s.URL), err))
		}
		p, err = f.prove(s, f.client, req, what)
		return nil, err
	})
	return p, err
}

// ProveBlob sends a HEAD for a blob source with the Fetcher's keychain (the
// requester's registry credentials): 200 proves the requester may pull it.
func (f *Fetcher) ProveBlob(ctx context.Context, s Spec) (Proof, error) {
	want, err := s.validate()
	if err != nil {
		return Proof{}, err
	}
	if s.Kind() != KindBlob {
		return Proof{}, failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "proving access to a %s source as a registry blob", s.Kind()))
	}
	ref, _, u, err := f.blobTarget(s, want)
	if err != nil {
		return Proof{}, err
	}
	what := "HEAD blob " + s.Blob
	var p Proof
	_, err = f.withRetries(ctx, s, func() (*Stream, error) {
		c, err := f.registryClient(ctx, s, ref)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.String(), nil)
		if err != nil {
			return nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "blob %s: %v", s.Blob, err))
		}
		p, err = f.prove(s, c, req, what)
		return nil, err
	})
	return p, err
}

// prove sends req and turns the response headers into a Proof; the body is
// closed unread.
func (f *Fetcher) prove(s Spec, c *http.Client, req *http.Request, what string) (Proof, error) {
	resp, err := c.Do(req)
	if err != nil {
		return Proof{}, doError(s, what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && !s.Validators.IsZero() {
		return Proof{NotModified: true, Length: -1}, nil
	}
	if err := statusError(s, what, resp); err != nil {
		return Proof{}, err
	}
	return Proof{
		Validators: Validators{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")},
		Length:     resp.ContentLength,
		Digest:     resp.Header.Get("Docker-Content-Digest"),
	}, nil
}

// HeadersID identifies the headers a URL source is requested with, without
// revealing them: the sha256 of the sorted, canonicalized name/value pairs.
// Requests with equal IDs present the same credentials.
func HeadersID(h map[string]string) string {
	names := make([]string, 0, len(h))
	values := make(map[string]string, len(h))
	for k, v := range h {
		k = http.CanonicalHeaderKey(k)
		names = append(names, k)
		values[k] = v
	}
	sort.Strings(names)
	d := sha256.New()
	for _, k := range names {
		// Length-prefixed, so no two header sets hash the same stream.
		fmt.Fprintf(d, "%d:%s%d:%s", len(k), k, len(values[k]), values[k])
	}
	return "sha256:" + hex.EncodeToString(d.Sum(nil))
}

// CredentialID identifies the registry credentials the Fetcher's keychain
// resolves for a blob source's repository, without revealing them: the
// sha256 of the resolved auth config (anonymous access has one ID too).
func (f *Fetcher) CredentialID(ctx context.Context, s Spec) (string, error) {
	ref, _, _, err := f.blobTarget(s, v1.Hash{})
	if err != nil {
		return "", err
	}
	auth, err := authn.Resolve(ctx, f.opts.Keychain, ref.Context())
	if err != nil {
		return "", failure.Permanent(failure.Unauthorized, failure.Layerf(s.Name, "resolving credentials for %s: %v", ref.Context(), err))
	}
	cfg, err := authn.Authorization(ctx, auth)
	if err != nil {
		return "", failure.Permanent(failure.Unauthorized, failure.Layerf(s.Name, "resolving credentials for %s: %v", ref.Context(), err))
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", failure.Layerf(s.Name, "encoding credentials for %s: %w", ref.Context(), err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
