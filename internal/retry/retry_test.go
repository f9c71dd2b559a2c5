package retry

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	base, max := 100*time.Millisecond, 2*time.Second
	tests := []struct {
		try      int
		min, top time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 800 * time.Millisecond, 1600 * time.Millisecond},
		{5, time.Second, 2 * time.Second},
		{200, time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if d := Backoff(tt.try, base, max); d < tt.min || d > tt.top {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", tt.try, d, tt.min, tt.top)
			}
		}
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep = %v, want context.Canceled", err)
	}
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

func TestTransientStatus(t *testing.T) {
	tests := []struct {
		code int
		want bool
	}{
		{http.StatusOK, false},
		{http.StatusNotModified, false},
		{http.StatusBadRequest, false},
		{http.StatusUnauthorized, false},
		{http.StatusForbidden, false},
		{http.StatusNotFound, false},
		{http.StatusGone, false},
		{http.StatusRequestedRangeNotSatisfiable, false},
		{http.StatusRequestTimeout, true},
		{http.StatusTooManyRequests, true},
		{http.StatusInternalServerError, true},
		{http.StatusNotImplemented, true},
		{http.StatusBadGateway, true},
		{http.StatusServiceUnavailable, true},
		{http.StatusGatewayTimeout, true},
		{599, true},
	}
	for _, tt := range tests {
		if got := TransientStatus(tt.code); got != tt.want {
			t.Errorf("TransientStatus(%d) = %v, want %v", tt.code, got, tt.want)
		}
	}
}

func TestAfter(t *testing.T) {
	tests := []struct {
		in       string
		min, max time.Duration
	}{
		{"", 0, 0},
		{"0", 0, 0},
		{"7", 7 * time.Second, 7 * time.Second},
		{" 12 ", 12 * time.Second, 12 * time.Second},
		{"-3", 0, 0},
		{"soon", 0, 0},
		{"1.5", 0, 0},
		{"99999999999999999999", 0, 0}, // does not parse as an int: no hint
		{"9999999999", maxAfterSeconds * time.Second, maxAfterSeconds * time.Second}, // capped, no overflow
		{"Wed, 21 Oct 2015 07:28:00 GMT", 0, 0},                                      // in the past
		{time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), 58 * time.Minute, time.Hour},
	}
	for _, tt := range tests {
		if got := After(tt.in); got < tt.min || got > tt.max {
			t.Errorf("After(%q) = %v, want within [%v, %v]", tt.in, got, tt.min, tt.max)
		}
	}
}

func TestHintOf(t *testing.T) {
	resp := func(code int, after string) *http.Response {
		h := http.Header{}
		if after != "" {
			h.Set("Retry-After", after)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	tests := []struct {
		resp *http.Response
		want time.Duration
	}{
		{nil, 0},
		{resp(503, "7"), 7 * time.Second},
		{resp(429, "2"), 2 * time.Second},
		{resp(500, "3"), 3 * time.Second},
		{resp(503, ""), 0},
		{resp(404, "7"), 0}, // a final answer: its hint means nothing
		{resp(301, "7"), 0},
	}
	for _, tt := range tests {
		if got := HintOf(tt.resp); got != tt.want {
			t.Errorf("HintOf(%v) = %v, want %v", tt.resp, got, tt.want)
		}
	}
}

func TestBudgetSharedAcrossNestedLoops(t *testing.T) {
	ctx := WithBudget(context.Background(), 3)
	inner := WithBudget(ctx, 100) // an inner loop joins, it does not reset
	if BudgetOf(inner) != BudgetOf(ctx) || BudgetOf(ctx).Left() != 3 {
		t.Fatalf("inner budget %p (left %d), outer %p", BudgetOf(inner), BudgetOf(inner).Left(), BudgetOf(ctx))
	}
	var wg sync.WaitGroup
	var taken atomic.Int32
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if Take(inner) {
				taken.Add(1)
			}
		}()
	}
	wg.Wait()
	if taken.Load() != 3 || BudgetOf(ctx).Left() != 0 {
		t.Fatalf("took %d retries of a budget of 3, %d left", taken.Load(), BudgetOf(ctx).Left())
	}
	if !Take(context.Background()) {
		t.Fatal("Take without a budget must leave the decision to the loop's own limit")
	}
	if NewBudget(-1).Take() {
		t.Fatal("a negative budget allows a retry")
	}
}

func TestPolicyNext(t *testing.T) {
	p := Policy{Retries: 2, Base: 100 * time.Millisecond, Cap: time.Second}
	tests := []struct {
		name    string
		budget  int // -1: no budget in the context
		try     int
		hint    time.Duration
		min     time.Duration
		max     time.Duration
		stop    bool
		tooLong bool
		spent   bool // the budget lost one retry
	}{
		{"backoff", -1, 0, 0, 50 * time.Millisecond, 100 * time.Millisecond, false, false, false},
		{"backoff doubles", -1, 1, 0, 100 * time.Millisecond, 200 * time.Millisecond, false, false, false},
		{"hint honoured exactly", 5, 0, 7 * time.Second, 7 * time.Second, 7 * time.Second, false, false, true},
		{"hint at the max", 5, 0, MaxAfter, MaxAfter, MaxAfter, false, false, true},
		{"hint too long keeps the budget", 5, 0, MaxAfter + time.Second, 0, 0, true, true, false},
		{"own limit", 5, 2, 0, 0, 0, true, false, false},
		{"budget spent", 0, 0, 3 * time.Second, 0, 0, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.budget >= 0 {
				ctx = WithBudget(ctx, tt.budget)
			}
			d, err := p.Next(ctx, tt.try, tt.hint)
			var stop *Stop
			if got := errors.As(err, &stop); got != tt.stop {
				t.Fatalf("Next = %v, %v; want stop %v", d, err, tt.stop)
			}
			if tt.stop {
				if stop.TooLong != tt.tooLong || stop.After != tt.hint {
					t.Fatalf("stop %+v, want TooLong %v After %v", stop, tt.tooLong, tt.hint)
				}
			} else if d < tt.min || d > tt.max {
				t.Fatalf("wait %v, want within [%v, %v]", d, tt.min, tt.max)
			}
			if b := BudgetOf(ctx); b != nil && (tt.budget-b.Left() == 1) != tt.spent {
				t.Fatalf("budget %d -> %d, want spent %v", tt.budget, b.Left(), tt.spent)
			}
		})
	}
}

func TestPolicyChainStartsOrJoins(t *testing.T) {
	p := Policy{Retries: 4}
	ctx := p.Chain(context.Background())
	if BudgetOf(ctx).Left() != 4 {
		t.Fatalf("new chain has %d retries, want 4", BudgetOf(ctx).Left())
	}
	outer := WithBudget(context.Background(), 1)
	if p.Chain(outer) != outer {
		t.Fatal("Chain replaced the budget the context carries")
	}
}
