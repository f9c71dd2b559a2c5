package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFlightSharesOneRun(t *testing.T) {
	g := &flightGroup{}
	const callers = 16
	var runs atomic.Int32
	unblock := make(chan struct{})
	fn := func() (any, error) {
		runs.Add(1)
		<-unblock
		return "result", nil
	}
	var wg sync.WaitGroup
	var shared atomic.Int32
	results := make([]any, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, sh, err := g.do(context.Background(), "layer/x", fn)
			if err != nil {
				t.Error(err)
			}
			if sh {
				shared.Add(1)
			}
			results[i] = v
		}()
	}
	waitForWaiters(t, g, "layer/x", callers-1)
	close(unblock)
	wg.Wait()
	if runs.Load() != 1 || shared.Load() != callers-1 {
		t.Fatalf("runs = %d, shared = %d", runs.Load(), shared.Load())
	}
	for i, v := range results {
		if v != "result" {
			t.Fatalf("caller %d got %v", i, v)
		}
	}
	// Not a cache: a later call runs again.
	if _, sh, _ := g.do(context.Background(), "layer/x", func() (any, error) { return nil, nil }); sh {
		t.Fatal("later call shared a finished result")
	}
}

// waitForWaiters polls until n callers joined key's flight. It bounds the
// loop by iterations, not time: each step yields to the other goroutines.
func waitForWaiters(t *testing.T, g *flightGroup, key string, n int) {
	t.Helper()
	for range 100000 {
		g.mu.Lock()
		f := g.flights[key]
		joined := f != nil && f.waiters >= n
		g.mu.Unlock()
		if joined {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
	t.Fatalf("callers never joined flight %q", key)
}

func TestFlightCancellation(t *testing.T) {
	g := &flightGroup{}

	// A waiter whose context ends stops waiting.
	unblock := make(chan struct{})
	go g.do(context.Background(), "k", func() (any, error) { <-unblock; return 1, nil })
	for range 100000 {
		g.mu.Lock()
		_, started := g.flights["k"]
		g.mu.Unlock()
		if started {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, _, err := g.do(ctx, "k", nil); done <- err }()
	waitForWaiters(t, g, "k", 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter got %v", err)
	}
	close(unblock)

	// A leader failing with its own cancellation does not hand it to a live waiter.
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	started := make(chan struct{})
	leaderDone := make(chan error)
	go func() {
		_, _, err := g.do(leaderCtx, "j", func() (any, error) {
			close(started)
			<-leaderCtx.Done()
			return nil, fmt.Errorf("fetching: %w", leaderCtx.Err())
		})
		leaderDone <- err
	}()
	<-started
	waiter := make(chan any)
	go func() {
		v, _, err := g.do(context.Background(), "j", func() (any, error) { return "mine", nil })
		if err != nil {
			t.Error(err)
		}
		waiter <- v
	}()
	waitForWaiters(t, g, "j", 1)
	cancelLeader()
	if err := <-leaderDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader got %v", err)
	}
	if v := <-waiter; v != "mine" {
		t.Fatalf("waiter got %v, want its own run", v)
	}
}

func TestFlightPanic(t *testing.T) {
	g := &flightGroup{}
	_, _, err := g.do(context.Background(), "p", func() (any, error) { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), `flight "p": panic: boom`) {
		t.Fatalf("err = %v", err)
	}
	// The key is usable again.
	if v, _, err := g.do(context.Background(), "p", func() (any, error) { return 2, nil }); v != 2 || err != nil {
		t.Fatalf("after panic: %v, %v", v, err)
	}
}
