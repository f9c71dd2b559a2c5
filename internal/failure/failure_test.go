package failure

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestClassification(t *testing.T) {
	perm := Permanentf(DigestMismatch, "layer %q: want %s, got %s", "rootfs", "sha256:a", "sha256:b")
	tests := []struct {
		name       string
		err        error
		permanent  bool
		reason     Reason
		retryAfter time.Duration
	}{
		{"permanent", perm, true, DigestMismatch, 0},
		{"wrapped permanent", fmt.Errorf("building: %w", perm), true, DigestMismatch, 0},
		{"transient with hint", Retryable(errors.New("429"), 3*time.Second), false, Transient, 3 * time.Second},
		{"unclassified is transient", context.DeadlineExceeded, false, Transient, 0},
		{"permanent wrapping nil", Permanent(InvalidLayer, nil), false, Transient, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsPermanent(tt.err); got != tt.permanent {
				t.Errorf("IsPermanent = %v, want %v", got, tt.permanent)
			}
			if got := ReasonOf(tt.err); got != tt.reason {
				t.Errorf("ReasonOf = %q, want %q", got, tt.reason)
			}
			if got := RetryAfterOf(tt.err); got != tt.retryAfter {
				t.Errorf("RetryAfterOf = %v, want %v", got, tt.retryAfter)
			}
		})
	}
	if perm.Error() != `layer "rootfs": want sha256:a, got sha256:b` {
		t.Errorf("message = %q", perm.Error())
	}
}
