package controllers

import (
	"hash/fnv"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kiln-build/kiln/internal/failure"
)

// behaviour is what the controller does after a failed step.
type behaviour int

const (
	// retryTransient: a blip (network, 408/429/5xx). Ready=False and
	// Reconciling=True with the reason; retried with backoff.
	retryTransient behaviour = iota
	// retryExternal: something outside the ImageBuild must change (a base
	// pushed, a pull secret fixed, a repository created). Ready=False and
	// Reconciling=True with the reason, never Stalled; retried with a
	// backoff capped at spec.interval, so it heals without anyone touching
	// the ImageBuild.
	retryExternal
	// stall: the spec or an input's content is wrong and retrying cannot
	// help. Stalled=True and Ready=False with the reason; no requeue until
	// the spec or an input changes (or reconcile.fluxcd.io/requestedAt).
	stall
)

func (b behaviour) String() string {
	switch b {
	case retryTransient:
		return "retry"
	case retryExternal:
		return "retry, backoff capped at spec.interval"
	}
	return "stall"
}

// errorPolicy decides every reason of internal/failure explicitly
// (TestErrorPolicyCoversEveryReason reads failure.go to keep it so).
var errorPolicy = map[failure.Reason]behaviour{
	// The content or the spec: the same bytes and spec fail the same way.
	failure.InvalidSpec:    stall,
	failure.InvalidLayer:   stall,
	failure.InvalidArchive: stall,
	failure.DigestMismatch: stall,
	failure.DiffIDMismatch: stall,
	// A limit of the manager (--max-layer-bytes, --build-timeout…): the
	// input is too big for this configuration, retrying repeats the cost.
	failure.LimitExceeded: stall,
	// The host policy (--allowed-source-hosts, link-local refusals) is the
	// manager's configuration, which a restart with new flags re-applies
	// to every object anyway.
	failure.SourceForbidden: stall,
	// The signing key Secret is missing or holds a key kiln cannot use: a
	// Secret created or fixed later is an input change (it is watched), so
	// stalling costs no retry loop and still heals on that change.
	failure.SigningKeyNotFound: stall,
	failure.SigningKeyInvalid:  stall,
	// The outside world: a ConfigMap applied a moment later, a URL that
	// 404s until it is published, a base tag not pushed yet, a platform
	// not yet in the base index, a 401 until a pull secret is fixed, a
	// registry refusing the push (repository missing, tag immutable,
	// quota) until its admin acts.
	failure.SourceNotFound:   retryExternal,
	failure.BaseNotFound:     retryExternal,
	failure.PlatformNotFound: retryExternal,
	failure.Unauthorized:     retryExternal,
	failure.PushRejected:     retryExternal,
	// A Flux source still fetching, or failing to: source-controller
	// retries it, and its next status change wakes the ImageBuild (the
	// Flux kinds are watched).
	failure.SourceNotReady: retryExternal,
	failure.Transient:      retryTransient,
}

// policyOf returns the behaviour for err. A reason missing from the table
// (which the test forbids) stalls when permanent, else retries.
func policyOf(err error) behaviour {
	if b, ok := errorPolicy[failure.ReasonOf(err)]; ok {
		return b
	}
	if failure.IsPermanent(err) {
		return stall
	}
	return retryTransient
}

// DefaultInterval is spec.interval when unset. The CRD has no default for
// it on purpose: a stored "1h" comes back from a Go client's update as
// "1h0m0s" (metav1.Duration's encoding), a spec change that would bump the
// generation of every object a typed client touches.
const DefaultInterval = time.Hour

// DefaultBackoffBase is the first retry delay of a failed attempt.
const DefaultBackoffBase = 5 * time.Second

// MaxTransientBackoff caps the retry delay of transient errors (network,
// 408/429/5xx); external errors back off up to spec.interval.
const MaxTransientBackoff = 5 * time.Minute

// retryLimit caps the backoff of a retried failure: spec.interval for an
// external problem (it heals when the world changes, no sooner), at most
// MaxTransientBackoff for a blip, so that after a registry outage builds
// resume within minutes, not at the next interval.
func retryLimit(b behaviour, interval time.Duration) time.Duration {
	if b == retryTransient {
		return min(interval, MaxTransientBackoff)
	}
	return interval
}

// backoff is the delay before retrying after failures consecutive failed
// attempts: base doubling per failure, capped at limit.
func backoff(base time.Duration, failures int32, limit time.Duration) time.Duration {
	d := base
	for i := int32(1); i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// jitterFraction is the spread of periodic checks: ±10%.
const jitterFraction = 0.1

// jittered spreads d by up to ±jitterFraction, by a fraction fixed per
// object (a hash of its uid): each object keeps a steady period, and 10 000
// objects created in the same second poll spread over a fifth of it.
func jittered(d time.Duration, uid types.UID) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(uid))
	u := float64(h.Sum64()>>11) / float64(1<<53) // [0, 1)
	return d + time.Duration((2*u-1)*jitterFraction*float64(d))
}
