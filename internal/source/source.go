// Package source opens a layer or base source (URL, ConfigMap/Secret bytes,
// registry blob) as a verified stream.
//
// Every error names the source (Spec.Name) and is classified with package
// failure: bad input and refusals are permanent, network trouble is
// transient. Retries happen only before the first body byte is handed out;
// afterwards a failure surfaces from Read and the caller retries the layer,
// within the same retry budget (WithRetryBudget, package retry).
package source

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/retry"
	"github.com/kiln-build/kiln/internal/units"
)

// Kind says where a source's bytes come from.
type Kind string

// Source kinds.
const (
	KindURL       Kind = "url"
	KindConfigMap Kind = "configMap"
	KindSecret    Kind = "secret"
	KindBlob      Kind = "blob"
	KindBytes     Kind = "bytes"
)

// Spec describes one source. Exactly one of URL, Blob, or Data/DataRef is set.
type Spec struct {
	// Name is the layer name (or "base"), used in every error message.
	Name string
	// URL is an http(s) URL.
	URL string
	// Headers are extra request headers for URL sources (e.g. Authorization
	// from a Secret). None of them follows a redirect to another scheme, host
	// or port, and no redirect carries a Referer (see scrubRedirect).
	Headers map[string]string
	// Data holds ConfigMap/Secret bytes already resolved by the caller.
	Data []byte
	// DataKind says where Data came from: KindConfigMap, KindSecret, or
	// KindBytes (the default). URL and Blob sources leave it empty: which
	// field is set already says what they are.
	DataKind Kind
	// DataRef describes Data for messages only, e.g. "configMap app-files
	// key app.tar.gz".
	DataRef string
	// Blob is "registry/repo@sha256:...", pulled with go-containerregistry.
	Blob string
	// Digest is an optional declared sha256 of the fetched bytes.
	Digest string
	// Validators, when set on a URL source, make the GET conditional
	// (If-None-Match / If-Modified-Since). A 304 answer makes Open return
	// ErrNotModified, so a caller that cached the previous fetch can reuse it
	// without downloading the layer again.
	Validators Validators
}

// Validators are an HTTP response's cache validators.
type Validators struct {
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
}

// IsZero reports whether no validator is set.
func (v Validators) IsZero() bool { return v.ETag == "" && v.LastModified == "" }

// ErrNotModified is returned by Open for a conditional URL request answered
// with 304 Not Modified.
var ErrNotModified = errors.New("source not modified since the previous fetch")

// Options configure a Fetcher. Zero values select the defaults.
type Options struct {
	// HTTPClient fetches URL sources. Default: connect timeout 10s,
	// response-header timeout 30s, at most 5 redirects, and a dialer that
	// refuses link-local addresses. A caller's client is used as is except
	// that redirects are limited to 5 and checked against the host policy.
	HTTPClient *http.Client
	// MaxBytes caps a source's size; default 8 GiB. Exceeding it is a
	// permanent LimitExceeded failure naming the limit.
	MaxBytes int64
	// Retries is the retry budget of one fetch: the retries its requests
	// may make in total, shared with the engine's whole-layer attempts of
	// the same layer (WithRetryBudget); default 5, negative for none.
	// Backoff is exponential with jitter from 200ms, capped at 10s; a
	// Retry-After on 408/429/5xx is honoured exactly up to retry.MaxAfter
	// (60s), a longer one ends the fetch as transient with the hint.
	Retries int
	// ReadTimeout fails a body read that yields no byte for this long
	// (transient); default 60s. Time the caller spends between Reads does
	// not count.
	ReadTimeout time.Duration
	// MinRate and MinRateWindow fail a trickling body (transient): every
	// MinRateWindow spent waiting for the body must bring at least
	// MinRate×MinRateWindow bytes. Default 1 KiB/s over 60s; a negative
	// MinRate disables the check. Like ReadTimeout, only time spent inside a
	// Read counts, so a slow consumer never trips it.
	MinRate       int64
	MinRateWindow time.Duration
	// Keychain resolves registry credentials for Blob sources; default
	// authn.DefaultKeychain.
	Keychain authn.Keychain
	// Insecure allows plain http to blob registries (name.Insecure).
	Insecure bool
	// AllowedHosts, when set, is the only hosts URL sources may use (host
	// names or IP literals, matched case-insensitively, with or without
	// port). When empty, link-local addresses (169.254.0.0/16, fe80::/10) and
	// cloud metadata names are refused. For Blob sources it only exempts
	// hosts from those refusals (egress.RegistryPolicy), as for every other
	// registry connection. Refusals are permanent SourceForbidden failures.
	AllowedHosts []string
	// Transport carries Blob pulls, token exchange included; default
	// registry.Transport (system roots, dial-time host checks). Every
	// request through it is vetted by the registry host policy either way.
	Transport http.RoundTripper
	// Sleep waits between retries; tests inject it. Default: a timer that
	// returns early with ctx.Err() when ctx ends.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Defaults.
const (
	DefaultMaxBytes      int64 = 8 << 30
	DefaultRetries             = 5
	DefaultReadTimeout         = 60 * time.Second
	DefaultMinRate       int64 = 1 << 10
	DefaultMinRateWindow       = 60 * time.Second
	maxRedirects               = 5
	backoffBase                = 200 * time.Millisecond
	backoffCap                 = 10 * time.Second
)

// Fetcher opens sources. It is safe for concurrent use.
type Fetcher struct {
	opts       Options
	policy     egress.Policy // URL sources
	blobPolicy egress.Policy // registry pulls
	client     *http.Client
	blobRT     http.RoundTripper // registry pulls, vetted by blobPolicy
	retry      retry.Policy
}

// NewFetcher returns a Fetcher with opts, defaults filled in.
func NewFetcher(opts Options) *Fetcher {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Retries == 0 {
		opts.Retries = DefaultRetries
	} else if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.MinRate == 0 {
		opts.MinRate = DefaultMinRate
	}
	if opts.MinRateWindow <= 0 {
		opts.MinRateWindow = DefaultMinRateWindow
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	if opts.Sleep == nil {
		opts.Sleep = retry.Sleep
	}
	f := &Fetcher{
		opts:       opts,
		retry:      retry.Policy{Retries: opts.Retries, Base: backoffBase, Cap: backoffCap, Sleep: opts.Sleep},
		policy:     egress.SourcePolicy(opts.AllowedHosts),
		blobPolicy: egress.RegistryPolicy(opts.AllowedHosts),
	}
	f.client = f.urlClient()
	f.blobRT = f.blobTransport()
	return f
}

// Kind reports the kind of source s describes, or "" when it sets none.
func (s Spec) Kind() Kind {
	switch {
	case s.URL != "":
		return KindURL
	case s.Blob != "":
		return KindBlob
	case s.DataKind != "":
		return s.DataKind
	case s.Data != nil || s.DataRef != "":
		return KindBytes
	}
	return ""
}

// Open returns the source's bytes as a stream; see the package comment for
// retry and error semantics. The declared Digest is verified while
// streaming: the Read that reaches the end returns a permanent DigestMismatch
// error instead of io.EOF when it differs.
func (f *Fetcher) Open(ctx context.Context, s Spec) (*Stream, error) {
	want, err := s.validate()
	if err != nil {
		return nil, err
	}
	switch s.Kind() {
	case KindURL:
		return f.openURL(ctx, s, want)
	case KindBlob:
		return f.openBlob(ctx, s, want)
	default:
		return f.openData(ctx, s, want)
	}
}

// validate checks that exactly one source is set and parses the digest.
func (s Spec) validate() (want v1.Hash, err error) {
	set := 0
	for _, ok := range []bool{s.URL != "", s.Blob != "", s.Data != nil || s.DataRef != ""} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return v1.Hash{}, failure.Permanent(failure.InvalidSpec,
			failure.Layerf(s.Name, "source must set exactly one of url, blob, configMap/secret data (%d set)", set))
	}
	if err := s.checkDataKind(); err != nil {
		return v1.Hash{}, err
	}
	if s.Digest == "" {
		return v1.Hash{}, nil
	}
	want, err = v1.NewHash(s.Digest)
	if err != nil || want.Algorithm != "sha256" {
		return v1.Hash{}, failure.Permanent(failure.InvalidSpec,
			failure.Layerf(s.Name, "digest %q is not a sha256 digest (sha256:<64 hex>)", s.Digest))
	}
	return want, nil
}

// checkDataKind refuses a DataKind that is not a data kind, or that is set
// on a URL or blob source.
func (s Spec) checkDataKind() error {
	switch s.DataKind {
	case "":
		return nil
	case KindConfigMap, KindSecret, KindBytes:
		if s.URL == "" && s.Blob == "" {
			return nil
		}
	}
	return failure.Permanentf(failure.InvalidSpec,
		"layer %q: data kind %q does not describe this source (want configMap, secret or bytes, on data only)", s.Name, s.DataKind)
}

func (f *Fetcher) openData(ctx context.Context, s Spec, want v1.Hash) (*Stream, error) {
	if int64(len(s.Data)) > f.opts.MaxBytes {
		return nil, f.limitError(s)
	}
	st := newStream(ctx, s, s.Kind(), want, f.opts, io.NopCloser(bytes.NewReader(s.Data)))
	return st, nil
}

func (f *Fetcher) limitError(s Spec) error {
	return failure.Permanent(failure.LimitExceeded,
		failure.Layerf(s.Name, "%s is larger than the limit of %d bytes (%s)", s.describe(), f.opts.MaxBytes, units.Bytes(f.opts.MaxBytes)))
}

// describe names the source for messages, without secrets.
func (s Spec) describe() string {
	switch s.Kind() {
	case KindURL:
		return egress.RedactURL(s.URL)
	case KindBlob:
		return "blob " + s.Blob
	default:
		if s.DataRef != "" {
			return s.DataRef
		}
		return "inline data"
	}
}
