package testkit

import (
	"io"
	"testing"
)

// ReadAll reads what open returns to its end and closes it, failing the
// test on any error: a layer's Compressed or Uncompressed, a stored blob.
func ReadAll(t testing.TB, open func() (io.ReadCloser, error)) []byte {
	t.Helper()
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
