package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/retry"
)

// Access says what a registry request was for; it decides the reason of a
// "not found" and how a rejected request is reported.
type Access int

const (
	// AccessSource is a layer source's blob pull: not found is
	// SourceNotFound.
	AccessSource Access = iota
	// AccessBase is a base image pull: not found is BaseNotFound.
	AccessBase
	// AccessTarget is the push target (HEADs of it included): not found and
	// rejections are PushRejected, since the repository cannot be written.
	AccessTarget
)

// Classify maps an error of go-containerregistry (or of the transport) to a
// classified failure whose message starts with what (the thing accessed,
// e.g. "base r/a:1") and says what to do; access is what the request was
// for (see Access).
//
//   - 401/403, UNAUTHORIZED, DENIED: Unauthorized
//   - NAME_UNKNOWN, MANIFEST_UNKNOWN, BLOB_UNKNOWN on a pull, 404: see above
//   - MANIFEST_INVALID, BLOB_UNKNOWN on a push, DIGEST_INVALID, SIZE_INVALID,
//     other 4xx: PushRejected (base/source: InvalidSpec)
//   - 408, 429, 5xx, connection resets, EOF, timeouts: Retryable
//   - certificate errors: InvalidSpec (a CA bundle or insecure is missing)
//   - host policy refusals (*egress.ForbiddenError, also of a token realm or
//     redirect): SourceForbidden, permanent, naming the host and why
//
// Errors that are already classified keep their reason; cancellation is
// returned unclassified so that the caller sees its own context error.
func Classify(err error, access Access, what string) error {
	if err == nil {
		return nil
	}
	err = redactURLs(err)
	var fe *failure.Error
	if errors.As(err, &fe) {
		return wrapKeeping(fe, what, err)
	}
	if fe, ok := egress.AsForbidden(err); ok {
		return forbidden(fe, what)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var ra *retryAfterError
	if errors.As(err, &ra) {
		return failure.Retryable(fmt.Errorf("%s: %w", what, err), ra.after)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return classifyStatus(te, access, what, err)
	}
	var bad *name.ErrBadName
	if errors.As(err, &bad) {
		return failure.Permanentf(failure.InvalidSpec, "%s: %v", what, err)
	}
	if IsCertError(err) {
		return failure.Permanentf(failure.InvalidSpec,
			"%s: %v: the registry's certificate is not trusted; give its CA bundle (target.caBundle) or use a trusted certificate", what, err)
	}
	return failure.Retryable(fmt.Errorf("%s: %w", what, err), 0)
}

// forbidden reports a host policy refusal. Only the refusal itself is shown:
// the net/http and go-containerregistry wrappers around it repeat request
// URLs with their query strings.
func forbidden(fe *egress.ForbiddenError, what string) error {
	return failure.Permanentf(failure.SourceForbidden, "%s: refusing to connect: %v", what, fe)
}

// redactURLs returns err with the URL of every *url.Error in its chain
// shown through egress.RedactURL: net/http puts the whole request URL in
// its errors, and a registry's redirect to blob storage is a pre-signed URL
// whose query grants access. The message is rewritten as a whole, because
// wrappers made with fmt.Errorf have already copied the URL into their
// text; the chain stays intact for errors.Is/As.
func redactURLs(err error) error {
	var pairs []string
	for e := err; e != nil; e = errors.Unwrap(e) {
		if ue, ok := e.(*url.Error); ok {
			if r := egress.RedactURL(ue.URL); r != ue.URL {
				pairs = append(pairs, ue.URL, r)
			}
		}
	}
	if len(pairs) == 0 {
		return err
	}
	return &redactedError{msg: strings.NewReplacer(pairs...).Replace(err.Error()), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// wrapKeeping prefixes an already classified error with what, keeping its
// reason and retry hint.
func wrapKeeping(fe *failure.Error, what string, err error) error {
	if strings.HasPrefix(err.Error(), what) {
		return err
	}
	return &failure.Error{Reason: fe.Reason, Permanent: fe.Permanent, RetryAfter: fe.RetryAfter,
		Err: fmt.Errorf("%s: %w", what, err)}
}

func classifyStatus(te *transport.Error, c Access, what string, err error) error {
	switch {
	case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden ||
		hasCode(te, transport.UnauthorizedErrorCode, transport.DeniedErrorCode):
		return failure.Permanentf(failure.Unauthorized, "%s: %v: %s", what, err, authHint(c))
	case hasCode(te, transport.NameUnknownErrorCode, transport.ManifestUnknownErrorCode) ||
		(c != AccessTarget && hasCode(te, transport.BlobUnknownErrorCode)) ||
		te.StatusCode == http.StatusNotFound:
		return notFound(c, what, err)
	case te.Temporary() || retry.TransientStatus(te.StatusCode):
		return failure.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	case c == AccessTarget:
		return failure.Permanentf(failure.PushRejected,
			"%s: the registry rejected the push: %v", what, err)
	default:
		return failure.Permanentf(failure.InvalidSpec, "%s: the registry refused the request: %v", what, err)
	}
}

func notFound(c Access, what string, err error) error {
	switch c {
	case AccessBase:
		return failure.Permanentf(failure.BaseNotFound,
			"%s: not found (%v): check the base reference and that its repository is readable", what, err)
	case AccessTarget:
		return failure.Permanentf(failure.PushRejected,
			"%s: repository not found (%v): create it or check target.image", what, err)
	default:
		return failure.Permanentf(failure.SourceNotFound, "%s: not found (%v)", what, err)
	}
}

func authHint(c Access) string {
	verb := "pull from"
	if c == AccessTarget {
		verb = "push to"
	}
	return "not allowed to " + verb + " this registry; check the pull secrets of serviceAccountName (kiln build: docker login / DOCKER_CONFIG)"
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// IsCertError reports whether err is a TLS certificate verification failure,
// which fails the same way on every attempt.
func IsCertError(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
	)
	return errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &hostname)
}
