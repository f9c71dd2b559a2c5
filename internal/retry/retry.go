// Package retry holds the waiting half of kiln's retry policies, shared by
// the source fetcher, the registry transport and the engine: exponential
// backoff with jitter, and a sleep that ends with its context.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

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
