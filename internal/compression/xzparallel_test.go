package compression

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/failure"
)

func decodeParallelXz(in []byte) ([]byte, error) {
	rc, err := NewParallelXzReader(bytes.NewReader(in), int64(len(in)), ReaderOptions{})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestParallelXzReader(t *testing.T) {
	fixture := readFixture(t, "fixture.tar")
	twice := append(append([]byte{}, fixture...), fixture...)
	blocks := readFixture(t, "fixture-blocks.tar.xz")
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"8 blocks", blocks, fixture},
		{"two streams", readFixture(t, "fixture-concat.tar.xz"), twice},
		{"two multi-block streams with padding", append(append(append([]byte{}, blocks...), 0, 0, 0, 0), blocks...), twice},
		{"single block (sequential)", readFixture(t, "fixture-sha256.tar.xz"), fixture},
		{"ulikunitz empty", ulikunitzXz(t, nil), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeParallelXz(tc.in)
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("decoded %d bytes (want %d), err %v", len(got), len(tc.want), err)
			}
		})
	}
}

func TestParallelXzCorrupt(t *testing.T) {
	fixture := readFixture(t, "fixture.tar")
	in := readFixture(t, "fixture-blocks.tar.xz")
	for i := 0; i < len(in); i += 13 {
		c := append([]byte{}, in...)
		c[i] ^= 0x41
		got, err := decodeParallelXz(c)
		if err == nil && !bytes.Equal(got, fixture) {
			t.Fatalf("byte %d: wrong data without an error", i)
		}
		if err != nil && (!failure.IsPermanent(err) || err.Error()[:4] != "xz: ") {
			t.Fatalf("byte %d: error %q is not a permanent xz error", i, err)
		}
	}
	for n := 1; n < len(in); n += 31 {
		if _, err := decodeParallelXz(in[:n]); err == nil || !failure.IsPermanent(err) {
			t.Fatalf("cut at %d: err = %v", n, err)
		}
	}
}

func TestParallelXzCloseEarly(t *testing.T) {
	in := readFixture(t, "fixture-blocks.tar.xz")
	for range 20 {
		rc, err := NewParallelXzReader(bytes.NewReader(in), int64(len(in)), ReaderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rc.Read(make([]byte, 100))
		rc.Close()
	}
	checkNoGoroutines(t, "newParallelXz")
}

// checkNoGoroutines fails if a goroutine whose stack mentions fn is still
// there after Close returned. Close waits (WaitGroup) for its goroutines, but
// one may still be between wg.Done and its exit, so yield a while before
// calling it a leak; unrelated goroutines are not counted.
func checkNoGoroutines(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	var left []string
	for range 1000 {
		left = left[:0]
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, fn) && !strings.Contains(g, "checkNoGoroutines") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		runtime.Gosched()
	}
	t.Errorf("goroutines left behind:\n%s", strings.Join(left, "\n\n"))
}
