package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
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
		c.CheckRedirect = f.policy.CheckRedirect(maxRedirects, errTooManyRedirects, f.opts.HTTPClient.CheckRedirect)
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
		CheckRedirect: f.policy.CheckRedirect(maxRedirects, errTooManyRedirects, nil),
	}
}

// errTooManyRedirects is returned from CheckRedirect.
var errTooManyRedirects = fmt.Errorf("stopped after %d redirects", maxRedirects)

// withRetries runs attempt until it succeeds, fails permanently, ctx ends, or
// the retries are used up; it waits between attempts as Options documents.
func (f *Fetcher) withRetries(ctx context.Context, s Spec, attempt func() (*Stream, error)) (*Stream, error) {
	for try := 0; ; try++ {
		st, err := attempt()
		if err == nil {
			return st, nil
		}
		if failure.IsPermanent(err) || errors.Is(err, ErrNotModified) || ctx.Err() != nil {
			return nil, err
		}
		wait := failure.RetryAfterOf(err)
		if try >= f.opts.Retries || wait > maxRetryAfter {
			return nil, failure.Retryable(fmt.Errorf("%w (gave up after %d attempts)", err, try+1), wait)
		}
		if wait == 0 {
			wait = backoff(try)
		}
		if serr := f.opts.Sleep(ctx, wait); serr != nil {
			return nil, fmt.Errorf("layer %q: waiting to retry: %w (last error: %v)", s.Name, serr, err)
		}
	}
}

// backoff is exponential from backoffBase, capped at backoffCap, with
// "equal jitter" (a random point in the upper half) so that builds failing
// together do not retry in lockstep.
func backoff(try int) time.Duration {
	return retry.Backoff(try, backoffBase, backoffCap)
}

// openURL fetches an http(s) URL.
func (f *Fetcher) openURL(ctx context.Context, s Spec, want v1.Hash) (*Stream, error) {
	u, err := url.Parse(s.URL)
	if err != nil {
		return nil, failure.Permanentf(failure.InvalidSpec, "layer %q: invalid URL %s: %v", s.Name, egress.RedactURL(s.URL), err)
	}
	if err := f.policy.CheckURL(u); err != nil {
		return nil, failure.Permanentf(failure.SourceForbidden, "layer %q: refusing %s: %v", s.Name, egress.RedactURL(s.URL), err)
	}
	return f.withRetries(ctx, s, func() (*Stream, error) {
		st := newStream(ctx, s, KindURL, want, f.opts, noBody{})
		req, err := http.NewRequestWithContext(st.ctx, http.MethodGet, s.URL, nil)
		if err != nil {
			st.Close()
			return nil, failure.Permanentf(failure.InvalidSpec, "layer %q: invalid URL %s: %v", s.Name, egress.RedactURL(s.URL), err)
		}
		// identity: without it net/http asks for gzip and transparently
		// decompresses, and the digest would not be that of the bytes served.
		req.Header.Set("Accept-Encoding", "identity")
		req.Header.Set("User-Agent", "kiln")
		for k, v := range s.Headers {
			req.Header.Set(k, v)
		}
		if s.Validators.ETag != "" {
			req.Header.Set("If-None-Match", s.Validators.ETag)
		}
		if s.Validators.LastModified != "" {
			req.Header.Set("If-Modified-Since", s.Validators.LastModified)
		}
		return f.startBody(st, f.client, req, "GET "+egress.RedactURL(s.URL))
	})
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
		return failure.Permanentf(failure.SourceForbidden, "layer %q: %s: refused: %v", s.Name, what, fe)
	}
	if errors.Is(err, errTooManyRedirects) {
		// A redirect loop is a broken URL, not a network hiccup.
		return failure.Permanentf(failure.InvalidSpec, "layer %q: %s: %v", s.Name, what, errTooManyRedirects)
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
		return failure.Permanentf(failure.InvalidSpec, "layer %q: %s: %v: %s", s.Name, what, err, hint)
	}
	return failure.Retryable(fmt.Errorf("layer %q: %s: %w", s.Name, what, err), 0)
}

// statusError classifies a response status; nil for 2xx.
func statusError(s Spec, what string, resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	var after time.Duration
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		after = retryAfter(resp.Header.Get("Retry-After"))
	}
	return classifyStatus(s, what, resp.StatusCode, after, resp.Status+bodySnippet(resp.Body))
}

func classifyStatus(s Spec, what string, code int, after time.Duration, detail string) error {
	msg := fmt.Errorf("layer %q: %s: %s", s.Name, what, detail)
	switch {
	case code == http.StatusNotFound || code == http.StatusGone:
		return failure.Permanent(failure.SourceNotFound, msg)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return failure.Permanent(failure.Unauthorized, msg)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return failure.Retryable(msg, after)
	default:
		return failure.Permanent(failure.InvalidSpec, msg)
	}
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, 1<<20)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// bodySnippet returns the start of an error body as one line, for messages.
func bodySnippet(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 512))
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		return ""
	}
	return ": " + s
}
