// Package retry is kiln's one retry policy for network requests, shared by
// the source fetcher (internal/source), the registry transport
// (internal/registry) and the engine's whole-layer attempts: which failures
// are worth another attempt, how long to wait, and how many attempts a
// request chain may make in total.
//
// Transient: HTTP 408, 429 and every 5xx (TransientStatus); every other
// status is final for the request, and callers classify it (permanent
// errors are never retried). Network errors are judged by the caller.
//
// Waiting: exponential backoff with equal jitter (Backoff). A server's
// Retry-After (After) is honoured exactly up to MaxAfter; a longer one ends
// the chain at once (Next returns a *Stop carrying the hint) so that the
// controller requeues after it instead of holding a worker.
//
// Budget: a request chain is everything kiln does to move one thing over the
// network, however many nested loops retry it: one layer fetch (the engine's
// whole-layer attempts and, inside each, the fetcher's request retries), one
// push (every request of it and go-containerregistry's restarts of whole
// blob uploads). The outermost loop puts a Budget in the context
// (WithBudget); every loop of the chain, at any depth, takes one retry from
// it before each retry (Next, Take), so the requests of a chain are at most
// its first attempts plus its budget, instead of the product of the loops'
// limits. A loop also stops after Policy.Retries retries of its own, so that
// one request cannot spend a pooled budget alone. The controller's requeue is
// outside every chain: each reconcile starts fresh chains, paced by the
// controller's own backoff and the Retry-After hint.
package retry

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// MaxAfter is the longest server-requested wait (Retry-After) honoured in
// place; a longer one stops the chain with the hint.
const MaxAfter = 60 * time.Second

// Backoff returns the wait before retry number try (0 for the first retry):
// base doubled per try, capped at max, with "equal jitter" — a random point
// in the upper half — so that builds failing together do not retry in lockstep.
func Backoff(try int, base, max time.Duration) time.Duration {
	d := max
	if try < 30 {
		if b := base << try; b > 0 && b < max {
			d = b
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits for d, or returns ctx's error when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// TransientStatus reports whether an HTTP status is worth another attempt:
// 408 Request Timeout, 429 Too Many Requests and every 5xx. Everything else
// (401, 403, 404, other 4xx) fails the same way on every attempt.
func TransientStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

// maxAfterSeconds bounds a parsed delay so that the Duration cannot overflow;
// anything this long is beyond MaxAfter anyway.
const maxAfterSeconds = 1 << 20

// After parses a Retry-After value: delay-seconds or an HTTP date. Missing,
// malformed, negative and past values are 0 (no hint).
func After(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, maxAfterSeconds)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// HintOf returns the Retry-After of a transient response, 0 for any other.
func HintOf(resp *http.Response) time.Duration {
	if resp == nil || !TransientStatus(resp.StatusCode) {
		return 0
	}
	return After(resp.Header.Get("Retry-After"))
}

// Budget is the number of retries left to one request chain. It is safe for
// concurrent use: parallel blob uploads of a push draw from one budget.
type Budget struct{ left atomic.Int64 }

// NewBudget returns a budget of n retries (none when n <= 0).
func NewBudget(n int) *Budget {
	b := &Budget{}
	b.left.Store(int64(max(n, 0)))
	return b
}

// Take uses one retry; false when none is left.
func (b *Budget) Take() bool {
	for {
		n := b.left.Load()
		if n <= 0 {
			return false
		}
		if b.left.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// Left is the number of retries not used yet.
func (b *Budget) Left() int { return int(b.left.Load()) }

type budgetKey struct{}

// WithBudget returns ctx carrying a budget of n retries, or ctx itself when
// it already carries one: the outermost loop of a chain sets the budget, and
// inner loops that call WithBudget too join it.
func WithBudget(ctx context.Context, n int) context.Context {
	if BudgetOf(ctx) != nil {
		return ctx
	}
	return context.WithValue(ctx, budgetKey{}, NewBudget(n))
}

// BudgetOf returns the budget ctx carries, nil when none.
func BudgetOf(ctx context.Context) *Budget {
	b, _ := ctx.Value(budgetKey{}).(*Budget)
	return b
}

// Take uses one retry of ctx's budget; true when ctx carries none (the
// caller's own limit then applies alone).
func Take(ctx context.Context) bool {
	b := BudgetOf(ctx)
	return b == nil || b.Take()
}

// Policy is how one retry loop waits and when it stops.
type Policy struct {
	// Retries is the most retries of one loop, and the budget of a chain
	// that Chain starts.
	Retries   int
	Base, Cap time.Duration                                    // Backoff's base and cap
	Sleep     func(ctx context.Context, d time.Duration) error // nil: Sleep
}

// Chain returns ctx carrying the chain's budget: the one it already carries,
// else a new one of p.Retries.
func (p Policy) Chain(ctx context.Context) context.Context {
	return WithBudget(ctx, p.Retries)
}

// Stop says why a chain gives up after a failed attempt.
type Stop struct {
	// After is the server's Retry-After hint, 0 when it gave none; for a
	// caller to hand on with its error (failure.Retryable).
	After time.Duration
	// TooLong is set when After exceeded MaxAfter; otherwise the retries
	// (the loop's own or the chain's budget) were used up.
	TooLong bool
}

func (s *Stop) Error() string {
	if s.TooLong {
		return "the server asks to retry after " + s.After.String() + ", longer than " + MaxAfter.String()
	}
	return "retries used up"
}

// Next decides after failed attempt number try (0 for the first) of a loop,
// a failure worth retrying with the server's hint (0 when none). It returns
// the wait before the next attempt and takes one retry from ctx's budget, or
// returns a *Stop. The hint is checked first, so that a chain ending on a
// long Retry-After does not spend its budget.
func (p Policy) Next(ctx context.Context, try int, hint time.Duration) (time.Duration, error) {
	if hint > MaxAfter {
		return 0, &Stop{After: hint, TooLong: true}
	}
	if try >= p.Retries || !Take(ctx) {
		return 0, &Stop{After: hint}
	}
	if hint > 0 {
		return hint, nil
	}
	return Backoff(try, p.Base, p.Cap), nil
}

// Wait sleeps for d with the policy's Sleep.
func (p Policy) Wait(ctx context.Context, d time.Duration) error {
	if p.Sleep != nil {
		return p.Sleep(ctx, d)
	}
	return Sleep(ctx, d)
}
