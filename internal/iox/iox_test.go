package iox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestContextReader(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := ContextReader(ctx, bytes.NewReader([]byte("abcdef")))
	buf := make([]byte, 3)
	if n, err := r.Read(buf); n != 3 || err != nil {
		t.Fatalf("before cancel: %d, %v", n, err)
	}
	cancel()
	if n, err := r.Read(buf); n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %d, %v; want 0, context.Canceled", n, err)
	}
}

func TestRecordedErrors(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		run  func() (got, count int64, err error)
		want error
		n    int64
	}{
		{"reader at EOF", func() (int64, int64, error) {
			r := NewReader(bytes.NewReader([]byte("abc")))
			n, _ := io.Copy(io.Discard, r)
			return n, r.Count(), r.Err()
		}, nil, 3},
		{"reader failing after data", func() (int64, int64, error) {
			r := NewReader(io.MultiReader(bytes.NewReader([]byte("ab")), iotest.ErrReader(boom)))
			n, _ := io.Copy(io.Discard, r)
			return n, r.Count(), r.Err()
		}, boom, 2},
		{"reader at failing", func() (int64, int64, error) {
			r := NewReaderAt(failingAt{boom})
			n, _ := r.ReadAt(make([]byte, 4), 0)
			return int64(n), int64(n), r.Err()
		}, boom, 0},
		{"writer", func() (int64, int64, error) {
			w := NewWriter(io.Discard)
			n, _ := io.Copy(w, bytes.NewReader([]byte("abcd")))
			return n, w.Count(), w.Err()
		}, nil, 4},
		{"writer failing", func() (int64, int64, error) {
			w := NewWriter(failingWriter{boom})
			n, _ := w.Write([]byte("abc"))
			return int64(n), w.Count(), w.Err()
		}, boom, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, count, err := tt.run()
			if got != tt.n || count != tt.n || err != tt.want {
				t.Errorf("bytes %d, count %d, Err %v; want %d, %d, %v", got, count, err, tt.n, tt.n, tt.want)
			}
		})
	}
}

type failingAt struct{ err error }

func (f failingAt) ReadAt([]byte, int64) (int, error) { return 0, f.err }

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }
