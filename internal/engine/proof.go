package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/source"
)

// The rule of this file: the shared cache saves work, it never grants
// access. Layers are cached by the sha256 of their source bytes, which is
// not a secret (a pinned digest is in a spec, a ConfigMap layer's digest in
// its status), so knowing it proves nothing. A build may use a cached layer
// only after proving, with its own identity, that it can obtain the same
// bytes itself:
//
//   - ConfigMap/Secret: the bytes are the build's own namespace object, read
//     by the caller; their sha256 is computed here, never taken from a
//     declared digest. The tarballs kiln writes for files, configMapDir and
//     secretDir layers are such data too, generated from those objects.
//   - URL: a request with the build's own headers to the URL the cached
//     bytes were fetched from, answered 304 to the recorded validators, or
//     200 with the recorded strong ETag (or, lacking ETags, length); else a
//     full fetch, which verifies the digest while streaming. An error
//     (unreachable, 401, 404) fails the build: it is never served from cache.
//   - Registry blob: a HEAD of the blob with the build's own credentials, at
//     the repository the cached bytes were pulled from, answered 200 with
//     the same digest and length; else a full pull.
//
// Without an origin record (the bytes came from somewhere else, e.g. another
// tenant's Secret) there is nothing a cheap request could confirm: an
// attacker's server answers HEAD 200 to anything. Then only a full fetch
// proves possession.

// urlRecord remembers what a URL (keyed by the hash of the full URL,
// query included) served when it was fetched: the validators for
// conditional requests and the length and digest of the bytes.
type urlRecord struct {
	Validators   source.Validators `json:"validators"`
	SourceDigest string            `json:"sourceDigest"`
	Length       int64             `json:"length"`
}

// blobRecord remembers that a blob reference was pulled, and how long it was.
type blobRecord struct {
	SourceDigest string `json:"sourceDigest"`
	Length       int64  `json:"length"`
}

func urlKey(url string) string { return "url-" + hashHex(url) }

func blobKey(ref string) string { return "blob-" + hashHex(ref) }

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func dataDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// pinnedDigest is the declared digest in canonical form, "" when none or
// malformed (Open reports the malformed one).
func pinnedDigest(src source.Spec) string {
	h, err := v1.NewHash(src.Digest)
	if err != nil || h.Algorithm != "sha256" {
		return ""
	}
	return h.String()
}

// flightKey names an in-flight fetch that concurrent builds may share: the
// source, the declared digest, the options and the identity the fetch is
// made with (a hash of the URL headers, of the resolved registry
// credentials, or of the bytes themselves). Two builds only share a fetch
// when they present the same identity. The key is hashed because it may be
// shown (flightGroup names it in a panic error) and URLs and headers carry secrets.
func flightKey(ctx context.Context, f *source.Fetcher, src source.Spec, opts string) (string, error) {
	var who string
	switch src.Kind() {
	case source.KindURL:
		who = "url\x00" + src.URL + "\x00" + source.HeadersID(src.Headers)
	case source.KindBlob:
		id, err := f.CredentialID(ctx, src)
		if err != nil {
			return "", err
		}
		who = "blob\x00" + src.Blob + "\x00" + id
	default:
		who = "data\x00" + dataDigest(src.Data)
	}
	return "layer " + hashHex(strings.Join([]string{who, src.Digest, opts}, "\x00")), nil
}

// proveCached returns the cached layer for src when src's own identity has
// proved it may have those bytes (see the top of this file); ok is false
// when only a full fetch can tell. An error is a failed proof request: the
// build fails with it.
func (e *Engine) proveCached(ctx context.Context, f *source.Fetcher, src source.Spec, opts string) (c cachedLayer, ok bool, err error) {
	switch src.Kind() {
	case source.KindURL:
		if pinnedDigest(src) == "" {
			// Unpinned: the conditional GET of the fetch itself is the proof.
			return c, false, nil
		}
		return e.provePinnedURL(ctx, f, src, opts)
	case source.KindBlob:
		return e.proveBlob(ctx, f, src, opts)
	default:
		id := dataDigest(src.Data)
		if src.Digest != "" && pinnedDigest(src) != id {
			return c, false, nil // the fetch reports the mismatch
		}
		c, ok = e.lookup(id, opts)
		return c, ok, nil
	}
}

func (e *Engine) provePinnedURL(ctx context.Context, f *source.Fetcher, src source.Spec, opts string) (cachedLayer, bool, error) {
	var rec urlRecord
	if ok, err := e.Store.GetMeta(urlKey(src.URL), &rec); err != nil || !ok || rec.SourceDigest != pinnedDigest(src) {
		return cachedLayer{}, false, nil
	}
	c, ok := e.lookup(rec.SourceDigest, opts)
	if !ok {
		return c, false, nil
	}
	probe := src
	probe.Validators = rec.Validators
	p, err := f.ProveURL(ctx, probe)
	if err != nil {
		return c, false, err
	}
	return c, rec.matches(p), nil
}

// matches reports whether a proof answer is about the recorded bytes: a
// 304 to the recorded validators, else a 200 with the same strong ETag, else
// (no ETags to compare) the same Last-Modified when both have one and the
// same length.
func (r urlRecord) matches(p source.Proof) bool {
	if p.NotModified {
		return true
	}
	if p.Length >= 0 && p.Length != r.Length {
		return false
	}
	if r.Validators.ETag != "" && p.Validators.ETag != "" {
		// A weak ETag only says "equivalent", not "the same bytes".
		return !strings.HasPrefix(r.Validators.ETag, "W/") && r.Validators.ETag == p.Validators.ETag
	}
	if r.Validators.LastModified != "" && p.Validators.LastModified != "" && r.Validators.LastModified != p.Validators.LastModified {
		return false
	}
	return p.Length >= 0
}

func (e *Engine) proveBlob(ctx context.Context, f *source.Fetcher, src source.Spec, opts string) (cachedLayer, bool, error) {
	var rec blobRecord
	if ok, err := e.Store.GetMeta(blobKey(src.Blob), &rec); err != nil || !ok {
		return cachedLayer{}, false, nil
	}
	c, ok := e.lookup(rec.SourceDigest, opts)
	if !ok {
		return c, false, nil
	}
	p, err := f.ProveBlob(ctx, src)
	if err != nil {
		return c, false, err
	}
	same := (p.Digest == "" || p.Digest == rec.SourceDigest) && (p.Length < 0 || p.Length == rec.Length)
	return c, same, nil
}

// recordOrigin remembers where verified bytes came from, so that the next
// build using the same origin can prove access with a cheap request. A
// failed write only costs a full fetch later.
func (e *Engine) recordOrigin(src source.Spec, st *source.Stream, sourceDigest string) {
	switch src.Kind() {
	case source.KindURL:
		_ = e.Store.PutMeta(urlKey(src.URL), urlRecord{Validators: st.Validators(), SourceDigest: sourceDigest, Length: st.Size()})
	case source.KindBlob:
		_ = e.Store.PutMeta(blobKey(src.Blob), blobRecord{SourceDigest: sourceDigest, Length: st.Size()})
	}
}
