package units

import (
	"math"
	"testing"
)

func TestBytes(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{2047, "2.0 KiB"}, // rounded, not exact: keeps its decimal
		{775884, "757.7 KiB"},
		{256 << 20, "256 MiB"},
		{8 << 30, "8 GiB"},
		{1<<32 - 1, "4.0 GiB"},
		{1 << 40, "1 TiB"},
		{math.MaxInt64, "8.0 EiB"},
		{-2048, "-2 KiB"},
	} {
		if got := Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
