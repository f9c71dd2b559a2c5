package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// flightGroup runs a layer's production once per key among the concurrent
// builds of this process; callers arriving while it runs wait and receive
// the same result, with shared set. The key carries the requester's
// identity (flightKey), so builds only share a fetch made with the same
// credentials. It is not a cache: a call after fn has returned runs fn again
// (the blob store's metadata records remember results across builds).
//
// Why not golang.org/x/sync/singleflight: Do cannot stop waiting when the
// caller's ctx ends, and DoChan runs fn on a goroutine of its own, so a
// leader giving up would drop a finished result (and the blob pin it
// carries) on the floor, and a panic there crashes the manager. Here the
// leader runs fn itself and always receives what it returns; a waiter whose
// ctx ends returns ctx.Err() without affecting the run; when the run fails
// only because its leader's ctx ended, a waiter whose ctx is live runs fn
// itself instead of inheriting somebody else's cancellation; a panic in fn
// is returned as an error.
type flightGroup struct {
	mu      sync.Mutex
	flights map[string]*flight
}

type flight struct {
	done    chan struct{}
	val     any
	err     error
	waiters int // callers that joined; read by tests
}

func (g *flightGroup) do(ctx context.Context, key string, fn func() (any, error)) (v any, shared bool, err error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		g.mu.Lock()
		if g.flights == nil {
			g.flights = map[string]*flight{}
		}
		f, running := g.flights[key]
		if !running {
			f = &flight{done: make(chan struct{})}
			g.flights[key] = f
			g.mu.Unlock()
			g.run(key, f, fn)
			return f.val, false, f.err
		}
		f.waiters++
		g.mu.Unlock()

		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-f.done:
		}
		if isContextErr(f.err) && ctx.Err() == nil {
			continue // the leader was cancelled, we were not: try again
		}
		return f.val, true, f.err
	}
}

func (g *flightGroup) run(key string, f *flight, fn func() (any, error)) {
	defer func() {
		if r := recover(); r != nil {
			f.val, f.err = nil, fmt.Errorf("engine: flight %q: panic: %v", key, r)
		}
		g.mu.Lock()
		delete(g.flights, key)
		g.mu.Unlock()
		close(f.done)
	}()
	f.val, f.err = fn()
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
