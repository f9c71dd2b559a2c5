package testkit

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os/exec"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Gzip compresses b with the standard library (empty header: the output
// depends on b only).
func Gzip(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	return buf.Bytes()
}

// Xz compresses b with ulikunitz/xz.
func Xz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatalf("xz: %v", err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatalf("xz: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("xz: %v", err)
	}
	return buf.Bytes()
}

// Zstd compresses b with klauspost/compress on one goroutine, as a stream
// (the frame names its window, as zstd(1) on a pipe does).
func Zstd(t testing.TB, b []byte) []byte {
	t.Helper()
	return ZstdWith(t, b)
}

// ZstdWith is Zstd with encoder options after the one-goroutine default.
func ZstdWith(t testing.TB, b []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, append([]zstd.EOption{zstd.WithEncoderConcurrency(1)}, opts...)...)
	if err != nil {
		t.Fatalf("zstd: %v", err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatalf("zstd: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("zstd: %v", err)
	}
	return buf.Bytes()
}

// Bzip2 shells out to bzip2(1): the standard library only decodes bzip2.
// A missing command fails the test: hack/e2e-deps.sh installs it.
func Bzip2(t testing.TB, b []byte) []byte {
	t.Helper()
	cmd := exec.Command("bzip2", "-c", "-9")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bzip2: %v", err)
	}
	return out
}

// Hex is the hex sha256 of b.
func Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Digest is "sha256:<hex>" of b.
func Digest(b []byte) string { return "sha256:" + Hex(b) }

// Hash is the sha256 of b as go-containerregistry spells it.
func Hash(b []byte) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: Hex(b)} }
