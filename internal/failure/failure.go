// Package failure classifies build errors so that callers (the controller and
// the CLI) can decide between retrying and stalling without parsing strings.
//
// A permanent failure carries a Reason that becomes the Stalled condition's
// reason; a transient one is retried with backoff. Errors that were never
// classified are treated as transient: retrying an unknown error is safer than
// stalling on it, and every known bad-input path classifies itself.
package failure

import (
	"errors"
	"fmt"
	"time"
)

// Reason is a CamelCase word a person can act on; it is used verbatim as a
// Kubernetes condition reason.
type Reason string

// Reasons for permanent failures. Keep them stable: users alert on them.
const (
	DigestMismatch   Reason = "DigestMismatch"
	DiffIDMismatch   Reason = "DiffIDMismatch"
	InvalidLayer     Reason = "InvalidLayer"
	InvalidArchive   Reason = "InvalidArchive"
	LimitExceeded    Reason = "LimitExceeded"
	SourceNotFound   Reason = "SourceNotFound"
	SourceForbidden  Reason = "SourceForbidden"
	Unauthorized     Reason = "Unauthorized"
	BaseNotFound     Reason = "BaseNotFound"
	PlatformNotFound Reason = "PlatformNotFound"
	InvalidSpec      Reason = "InvalidSpec"
	PushRejected     Reason = "PushRejected"
	// SigningKeyNotFound: spec.signing's Secret, or its cosign.key, is missing.
	SigningKeyNotFound Reason = "SigningKeyNotFound"
	// SigningKeyInvalid: the key cannot be decrypted (wrong password) or is
	// not a cosign ECDSA P-256 key.
	SigningKeyInvalid Reason = "SigningKeyInvalid"
	// SourceNotReady: a Flux source a layer names has no artifact yet, or
	// is not Ready. Never permanent: the source heals on its own schedule.
	SourceNotReady Reason = "SourceNotReady"
	// Transient is the reason reported for retried failures.
	Transient Reason = "TransientError"
)

// Error is a classified error.
type Error struct {
	Reason    Reason
	Permanent bool
	// RetryAfter is a server's hint (e.g. a 429 Retry-After); zero when none.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Permanentf returns a permanent error with the given reason.
func Permanentf(reason Reason, format string, args ...any) error {
	return &Error{Reason: reason, Permanent: true, Err: fmt.Errorf(format, args...)}
}

// Permanent marks err permanent with reason. A nil err stays nil.
func Permanent(reason Reason, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Reason: reason, Permanent: true, Err: err}
}

// Transientf returns an error that should be retried.
func Transientf(format string, args ...any) error {
	return &Error{Reason: Transient, Err: fmt.Errorf(format, args...)}
}

// Retryable marks err as transient, with an optional server hint.
func Retryable(err error, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	return &Error{Reason: Transient, Err: err, RetryAfter: retryAfter}
}

// IsPermanent reports whether err, or any error it wraps, is permanent.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

// ReasonOf returns the reason of the outermost classified error in err's
// chain, or Transient when there is none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return Transient
}

// RetryAfterOf returns the server's retry hint carried by err, if any.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
