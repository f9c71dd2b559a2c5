package retry

import (
	"context"
	"errors"
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
