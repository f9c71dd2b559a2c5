package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/retry"
)

// urlClient returns the client for URL sources: the caller's (with redirects
// limited and vetted) or a default with the timeouts Options documents.
func (f *Fetcher) urlClient() *http.Client {
	if f.opts.HTTPClient != nil {
		c := *f.opts.HTTPClient
		c.CheckRedirect = f.policy.CheckRedirect(maxRedirects, errTooManyRedirects, scrubRedirect(f.opts.HTTPClient.CheckRedirect))
		return &c
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           f.policy.DialContext(dialer),
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          32,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: f.policy.CheckRedirect(maxRedirects, errTooManyRedirects, scrubRedirect(nil)),
	}
}

// errTooManyRedirects is returned from CheckRedirect.
var errTooManyRedirects = fmt.Errorf("stopped after %d redirects", maxRedirects)

// scrubRedirect strips from every redirect what must not follow it; the host
// policy's CheckRedirect has vetted the hop count and the host before.
// net/http copies the first request's headers onto each hop and strips only
// Authorization, Cookie and WWW-Authenticate, and only on a change of domain
// (the port does not count); it also adds a Referer holding the previous URL
// with its query, which is where a pre-signed URL keeps its signature. So
// here, on every hop: no Referer at all, and once the chain has left the
// first request's origin (scheme, host and port), none of the tenant's
// headersFrom headers, even if a later hop comes back.
func scrubRedirect(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		req.Header.Del("Referer")
		if leftOrigin(req, via) {
			dropTenantHeaders(req)
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
}

// leftOrigin reports whether req or any earlier hop is on another origin
// than the first request.
func leftOrigin(req *http.Request, via []*http.Request) bool {
	first := origin(via[0].URL)
	if origin(req.URL) != first {
		return true
	}
	for _, r := range via[1:] {
		if origin(r.URL) != first {
			return true
		}
	}
	return false
}

// origin is scheme://host:port with the default port made explicit, so that
// http://h and http://h:80 are one origin and http://h:8080 another.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// tenantHeadersKey carries, in a URL request's context (which net/http
// hands to every redirect), the names of the headers that came from the
// spec's headersFrom.
type tenantHeadersKey struct{}

func withTenantHeaders(ctx context.Context, names []string) context.Context {
	if len(names) == 0 {
		return ctx
	}
	return context.WithValue(ctx, tenantHeadersKey{}, names)
}

// dropTenantHeaders removes the headersFrom headers from a redirected
// request and restores kiln's own User-Agent if one of them had replaced it.
func dropTenantHeaders(req *http.Request) {
	names, _ := req.Context().Value(tenantHeadersKey{}).([]string)
	for _, n := range names {
		req.Header.Del(n)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}
}

// withRetries runs attempt until it succeeds, fails permanently, ctx ends, or
// the retries are used up; it waits between attempts as Options documents.
// It joins the retry budget ctx carries (WithRetryBudget: the engine's
// whole-layer attempts share it) or starts one of Options.Retries, so one
// layer fetch makes at most 1+Retries requests however the loops nest.
func (f *Fetcher) withRetries(ctx context.Context, s Spec, attempt func() (*Stream, error)) (*Stream, error) {
	ctx = f.retry.Chain(ctx)
	for try := 0; ; try++ {
		st, err := attempt()
		if err == nil {
			return st, nil
		}
		if failure.IsPermanent(err) || errors.Is(err, ErrNotModified) || ctx.Err() != nil {
			return nil, err
		}
		hint := failure.RetryAfterOf(err)
		wait, stop := f.retry.Next(ctx, try, hint)
		if stop != nil {
			return nil, failure.Retryable(fmt.Errorf("%w (gave up after %d attempts)", err, try+1), hint)
		}
		if serr := f.retry.Wait(ctx, wait); serr != nil {
			return nil, failure.Layerf(s.Name, "waiting to retry: %w (last error: %v)", serr, err)
		}
	}
}

// WithRetryBudget returns ctx carrying the retry budget of one layer fetch
// (Options.Retries), or ctx itself when it carries one already. A caller
// that retries whole fetches (the engine, when a stream breaks mid-way)
// calls it once per layer and takes a retry from it (retry.Take) before each
// new attempt, so that its attempts and the fetcher's request retries share
// one bound instead of multiplying.
func (f *Fetcher) WithRetryBudget(ctx context.Context) context.Context {
	return f.retry.Chain(ctx)
}

// openURL fetches an http(s) URL.
func (f *Fetcher) openURL(ctx context.Context, s Spec, want v1.Hash) (*Stream, error) {
	u, err := url.Parse(s.URL)
	if err != nil {
		return nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "invalid URL %s: %v", egress.RedactURL(s.URL), err))
	}
	if err := f.policy.CheckURL(u); err != nil {
		return nil, failure.Permanent(failure.SourceForbidden, failure.Layerf(s.Name, "refusing %s: %v", egress.RedactURL(s.URL), err))
	}
	return f.withRetries(ctx, s, func() (*Stream, error) {
		st := newStream(ctx, s, KindURL, want, f.opts, noBody{})
		req, err := newURLRequest(st.ctx, s)
		if err != nil {
			st.Close()
			return nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "invalid URL %s: %v", egress.RedactURL(s.URL), err))
		}
		return f.startBody(st, f.client, req, "GET "+egress.RedactURL(s.URL))
	})
}

const userAgent = "kiln"

// newURLRequest builds the GET for a URL source: the spec's headers, then
// kiln's own, which win. The names of the spec's headers that went out as
// given ride in the context so that scrubRedirect can drop them.
func newURLRequest(ctx context.Context, s Spec) (*http.Request, error) {
	kiln := map[string]string{"Accept-Encoding": "identity"}
	if s.Validators.ETag != "" {
		kiln["If-None-Match"] = s.Validators.ETag
	}
	if s.Validators.LastModified != "" {
		kiln["If-Modified-Since"] = s.Validators.LastModified
	}
	var tenant []string
	for k := range s.Headers {
		if k = http.CanonicalHeaderKey(k); kiln[k] == "" {
			tenant = append(tenant, k)
		}
	}
	req, err := http.NewRequestWithContext(withTenantHeaders(ctx, tenant), http.MethodGet, s.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", userAgent)
	for k, v := range s.Headers {
		req.Header.Set(k, v)
	}
	// Accept-Encoding identity: without it net/http asks for gzip and
	// transparently decompresses, and the digest would not be that of the
	// bytes served.
	for k, v := range kiln {
		req.Header.Set(k, v)
	}
	return req, nil
}

// startBody sends req and, on success, attaches the body to st and reads its
// first bytes. On failure st is closed.
func (f *Fetcher) startBody(st *Stream, c *http.Client, req *http.Request, what string) (*Stream, error) {
	resp, err := c.Do(req)
	if err != nil {
		st.Close()
		return nil, doError(st.spec, what, err)
	}
	if resp.StatusCode == http.StatusNotModified && !st.spec.Validators.IsZero() {
		resp.Body.Close()
		st.Close()
		return nil, ErrNotModified
	}
	st.validators = Validators{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
	if err := statusError(st.spec, what, resp); err != nil {
		resp.Body.Close()
		st.Close()
		return nil, err
	}
	if resp.ContentLength > f.opts.MaxBytes {
		resp.Body.Close()
		st.Close()
		return nil, f.limitError(st.spec)
	}
	st.what = what
	st.watch(resp.Body)
	if err := st.prefetch(); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// noBody stands in for a body not received yet.
type noBody struct{}

func (noBody) Read([]byte) (int, error) { return 0, io.EOF }
func (noBody) Close() error             { return nil }

// doError classifies an error from http.Client.Do.
func doError(s Spec, what string, err error) error {
	if fe, ok := egress.AsForbidden(err); ok {
		return failure.Permanent(failure.SourceForbidden, failure.Layerf(s.Name, "%s: refused: %v", what, fe))
	}
	if errors.Is(err, errTooManyRedirects) {
		// A redirect loop is a broken URL, not a network hiccup.
		return failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "%s: %v", what, errTooManyRedirects))
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return classifyStatus(s, what, te.StatusCode, 0, te.Error())
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its message repeats the unredacted URL
	}
	if registry.IsCertError(err) {
		// The same on every attempt: a missing CA, not a network hiccup.
		hint := "the server's certificate is not trusted"
		if s.Kind() == KindBlob {
			hint += "; give the registry's CA bundle (target.caBundle)"
		}
		return failure.Permanent(failure.InvalidSpec, failure.Layerf(s.Name, "%s: %v: %s", what, err, hint))
	}
	return failure.Retryable(failure.Layerf(s.Name, "%s: %w", what, err), 0)
}

// statusError classifies a response status; nil for 2xx.
func statusError(s Spec, what string, resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return classifyStatus(s, what, resp.StatusCode, retry.HintOf(resp), resp.Status+bodySnippet(resp.Body, secretsOf(s, resp)))
}

// minQuerySecret is the shortest query value scrubbed from an error body:
// shorter ones are flags like download=1, and replacing every "1" would
// garble the message without protecting anything.
const minQuerySecret = 4

// secretsOf lists what an error body must not carry into a message: servers
// echo requests back (S3's SignatureDoesNotMatch answer holds the signature
// and the canonical query). That is the userinfo and the query values, raw
// and decoded, of every URL of the redirect chain, and the spec's header
// values.
func secretsOf(s Spec, resp *http.Response) []string {
	var out []string
	add := func(v string, min int) {
		if len(v) >= min {
			out = append(out, v)
		}
	}
	urls := []string{s.URL}
	for r := resp.Request; r != nil; {
		urls = append(urls, r.URL.String())
		if r.Response == nil {
			break
		}
		r = r.Response.Request
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if u.User != nil {
			add(u.User.Username(), 1)
			p, _ := u.User.Password()
			add(p, 1)
		}
		for _, kv := range strings.Split(u.RawQuery, "&") {
			_, v, _ := strings.Cut(kv, "=")
			add(v, minQuerySecret)
			if dec, err := url.QueryUnescape(v); err == nil {
				add(dec, minQuerySecret)
			}
		}
	}
	for _, v := range s.Headers {
		add(v, 1)
		for _, w := range strings.Fields(v) { // "Bearer <token>" echoed in pieces
			add(w, minQuerySecret)
		}
	}
	return out
}

// scrub replaces every secret in msg, longest first so that a secret
// containing another is replaced whole.
func scrub(msg string, secrets []string) string {
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, sec := range secrets {
		msg = strings.ReplaceAll(msg, sec, "<redacted>")
	}
	return msg
}

func classifyStatus(s Spec, what string, code int, after time.Duration, detail string) error {
	msg := failure.Layerf(s.Name, "%s: %s", what, detail)
	switch {
	case code == http.StatusNotFound || code == http.StatusGone:
		return failure.Permanent(failure.SourceNotFound, msg)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return failure.Permanent(failure.Unauthorized, msg)
	case retry.TransientStatus(code):
		return failure.Retryable(msg, after)
	default:
		return failure.Permanent(failure.InvalidSpec, msg)
	}
}

// bodySnippet returns the start of an error body as one line, for messages,
// with the secrets scrubbed. Scrubbing comes before shortening, and a word
// cut off by the read limit is dropped, so no part of a secret survives.
func bodySnippet(r io.Reader, secrets []string) string {
	const limit = 512
	b, _ := io.ReadAll(io.LimitReader(r, limit+1))
	words := strings.Fields(strings.ToValidUTF8(string(b), "?"))
	if len(b) > limit && len(words) > 0 {
		words = words[:len(words)-1]
	}
	s := scrub(strings.Join(words, " "), secrets)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "..."
	}
	if s == "" {
		return ""
	}
	return ": " + s
}
