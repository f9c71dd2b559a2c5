package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/retry"
)

// retryTransport retries one HTTP request on 408, 429, 5xx
// (retry.TransientStatus) and connection errors, with exponential backoff and
// jitter, honouring Retry-After up to retry.MaxAfter.
//
// Budget: at most Options.Retries retries per request, each also taken from
// the retry budget the request's context carries (Push sets one for the whole
// push, shared with go-containerregistry's restarts of whole blob uploads:
// see pushBudget); a request without one is a chain of its own.
//
// Only requests it can replay are retried: no body, or a body with GetBody.
// A connection error during a blob upload session (PATCH, or PUT to
// /blobs/uploads/) is not retried here: the registry may have stored part of
// the chunk, so replaying it could append twice. go-containerregistry then
// restarts the whole blob upload (see uploadBackoff and retryWhole).
type retryTransport struct {
	base   http.RoundTripper
	policy retry.Policy
	stats  *stats
}

func newRetryTransport(base http.RoundTripper, o Options, st *stats) *retryTransport {
	return &retryTransport{base: base, policy: o.retryPolicy(), stats: st}
}

// stats counts what a push actually uploaded, and records the digest the
// registry reports for each manifest it stored.
type stats struct {
	blobs atomic.Int64
	bytes atomic.Int64

	mu        sync.Mutex
	manifests map[string]string // PUT path -> Docker-Content-Digest
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 0; ; attempt++ {
		r, err := t.attemptRequest(req, attempt)
		if err != nil {
			return nil, err
		}
		resp, err := t.base.RoundTrip(r)
		hint, again := t.shouldRetry(req, resp, err, replayable)
		if !again {
			t.count(req, resp, err)
			return resp, err
		}
		wait, stop := t.policy.Next(ctx, attempt, hint)
		if stop != nil {
			return giveUp(req, resp, err, hint, attempt+1)
		}
		if resp != nil {
			drain(resp)
		}
		if serr := t.policy.Wait(ctx, wait); serr != nil {
			return nil, serr
		}
	}
}

// attemptRequest returns the request for attempt n: the original first, then
// clones with a fresh body from GetBody.
func (t *retryTransport) attemptRequest(req *http.Request, n int) (*http.Request, error) {
	if n == 0 {
		return req, nil
	}
	r := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("%s %s: replaying the request body: %w", req.Method, egress.RedactURL(req.URL.String()), err)
		}
		r.Body = body
	}
	return r, nil
}

// shouldRetry decides whether an attempt is retried and how long the server
// asked to wait (0 when it did not say).
func (t *retryTransport) shouldRetry(req *http.Request, resp *http.Response, err error, replayable bool) (time.Duration, bool) {
	if !replayable || req.Context().Err() != nil {
		return 0, false
	}
	if err != nil {
		return 0, !uploadSession(req) && retryableNetError(err)
	}
	if !retry.TransientStatus(resp.StatusCode) {
		return 0, false
	}
	return retry.HintOf(resp), true
}

// count records a finished upload and a stored manifest's digest for
// PushResult.
func (t *retryTransport) count(req *http.Request, resp *http.Response, err error) {
	if t.stats == nil || err != nil {
		return
	}
	if manifestPut(req) && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		t.stats.manifest(req.URL.Path, resp.Header.Get("Docker-Content-Digest"))
		return
	}
	if !uploadSession(req) {
		return
	}
	ok := (req.Method == http.MethodPatch && resp.StatusCode == http.StatusAccepted) ||
		(req.Method == http.MethodPut && resp.StatusCode == http.StatusCreated)
	if !ok {
		return
	}
	if req.ContentLength > 0 {
		t.stats.bytes.Add(req.ContentLength)
	}
	if req.Method == http.MethodPut {
		t.stats.blobs.Add(1)
	}
}

// manifestPut reports whether req stores a manifest (PUT
// /v2/<repo>/manifests/<tag or digest>).
func manifestPut(req *http.Request) bool {
	return req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/manifests/")
}

// manifest records the digest the registry reported for the manifest stored
// at path ("" when it sent none); a later PUT of the same path wins.
func (s *stats) manifest(path, digest string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.manifests == nil {
		s.manifests = map[string]string{}
	}
	s.manifests[path] = digest
}

// reported returns the digest recorded for path, "" when none.
func (s *stats) reported(path string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.manifests[path]
}

// uploadSession reports whether req belongs to a blob upload session, whose
// server-side state a lost response leaves unknown.
func uploadSession(req *http.Request) bool {
	if req.Method != http.MethodPatch && req.Method != http.MethodPut {
		return false
	}
	return strings.Contains(req.URL.Path, "/blobs/uploads/")
}

// retryableNetError reports whether err is a network failure worth another
// attempt. Certificate problems, host policy refusals and cancellations are
// not.
func retryableNetError(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if _, ok := egress.AsForbidden(err); ok {
		return false
	}
	var recordHdr tls.RecordHeaderError // https spoken to an http server
	return !IsCertError(err) && !errors.As(err, &recordHdr)
}

// giveUp ends a request that kept failing. A plain 5xx response is returned
// as is (the caller's error handling reports its status); a server wait hint
// is turned into an error that carries it, so that Classify can hand it to
// the controller's requeue.
func giveUp(req *http.Request, resp *http.Response, err error, wait time.Duration, attempts int) (*http.Response, error) {
	if err != nil {
		return nil, &exhaustedError{err: err, attempts: attempts}
	}
	if wait == 0 {
		return resp, nil
	}
	drain(resp)
	return nil, &retryAfterError{method: req.Method, url: egress.RedactURL(req.URL.String()), status: resp.StatusCode, after: wait, attempts: attempts}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// exhaustedError is a network error that survived every retry.
type exhaustedError struct {
	err      error
	attempts int
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("%v (after %d attempts)", e.err, e.attempts)
}
func (e *exhaustedError) Unwrap() error { return e.err }

// retryAfterError is a 429/503 whose Retry-After outlasted the retries.
type retryAfterError struct {
	method, url string
	status      int
	after       time.Duration
	attempts    int
}

func (e *retryAfterError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d %s, the registry asks to retry after %s (after %d attempts)",
		e.method, e.url, e.status, http.StatusText(e.status), e.after, e.attempts)
}

// budgeted returns retryWhole that also takes one retry from b per restart,
// so that restarts and request retries of a push share one bound; without a
// budget uploadBackoff's steps alone bound the restarts.
func budgeted(b *retry.Budget) func(error) bool {
	return func(err error) bool {
		return retryWhole(err) && (b == nil || b.Take())
	}
}

// retryWhole is go-containerregistry's retry predicate, used for whole blob
// uploads (and, harmlessly, for requests retryTransport already retried: it
// refuses errors that are marked as exhausted). It retries a blob upload
// that broke mid-stream and one whose session the registry lost or refused.
func retryWhole(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ex *exhaustedError
	var ra *retryAfterError
	if errors.As(err, &ex) || errors.As(err, &ra) {
		return false
	}
	if _, ok := egress.AsForbidden(err); ok {
		return false // a *url.Error around it is a net.Error: never a conn error
	}
	var te *transport.Error
	if errors.As(err, &te) {
		if te.StatusCode == http.StatusRequestedRangeNotSatisfiable {
			return true // our chunk offset disagrees with the registry's: start over
		}
		for _, d := range te.Errors {
			if d.Code == transport.BlobUploadUnknownErrorCode || d.Code == transport.BlobUploadInvalidErrorCode {
				return true
			}
		}
		return false // status codes were retried per request already
	}
	return isConnError(err) && !IsCertError(err)
}

// isConnError reports whether err looks like a broken or refused connection.
func isConnError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, net.ErrClosed) ||
		errors.As(err, &ne)
}
