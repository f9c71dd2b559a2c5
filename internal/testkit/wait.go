package testkit

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing the test after timeout with
// cond's last explanation. Use it for what happens eventually; never to
// bound how long something takes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	if why, ok := Poll(timeout, cond); !ok {
		t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, why)
	}
}

// PollInterval is how often Poll asks.
const PollInterval = 100 * time.Millisecond

// Poll asks cond every PollInterval until it holds or timeout passes; it
// returns cond's last explanation and whether it held.
func Poll(timeout time.Duration, cond func() (bool, string)) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return why, true
		}
		if time.Now().After(deadline) {
			return why, false
		}
		time.Sleep(PollInterval)
	}
}
