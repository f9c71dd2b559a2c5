package compression

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/kiln-build/kiln/internal/failure"
)

// magics are checked in order against the first bytes of a stream.
var magics = []struct {
	alg   Algorithm
	magic []byte
}{
	{Gzip, []byte{0x1f, 0x8b}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{Xz, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{Bzip2, []byte{'B', 'Z', 'h'}},
}

const tarBlockSize = 512

// Detect peeks (never consumes) the first bytes of r and names their
// compression. A stream without a known magic must look like a tar (ustar or
// GNU magic at offset 257, or a v7 header whose checksum verifies) to be None;
// anything else is a permanent InvalidLayer error showing the first bytes, so a
// user who fetched an HTML error page sees "3c68746d6c3e" (<html>) at once.
func Detect(r *bufio.Reader) (Algorithm, error) {
	head, err := r.Peek(tarBlockSize)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return "", fmt.Errorf("reading the first bytes: %w", err)
	}
	if len(head) == 0 {
		return "", failure.Permanentf(failure.InvalidLayer, "empty input")
	}
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.alg, nil
		}
	}
	if looksLikeTar(head) {
		return None, nil
	}
	return "", failure.Permanentf(failure.InvalidLayer,
		"not a tar archive (first bytes: %x...)", head[:min(len(head), 16)])
}

// looksLikeTar reports whether block is the first header of a tar archive.
// An all-zero block is an empty archive (just the end marker), which is a
// valid tar: `tar -cf x.tar -T /dev/null` produces one.
func looksLikeTar(block []byte) bool {
	if len(block) < tarBlockSize {
		return false
	}
	magic := block[257:265]
	if bytes.HasPrefix(magic, []byte("ustar\x00")) || bytes.Equal(magic, []byte("ustar  \x00")) {
		return true
	}
	if isZero(block) {
		return true
	}
	return checksumOK(block)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checksumOK verifies a v7 header checksum: the octal field at 148..156 is the
// sum of all header bytes with the field itself counted as spaces. Some old
// writers summed signed bytes, so both sums are accepted.
func checksumOK(h []byte) bool {
	want, ok := parseOctal(h[148:156])
	if !ok {
		return false
	}
	var unsigned, signed int64
	for i, c := range h[:tarBlockSize] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}

// parseOctal parses a NUL/space padded octal field; it needs at least one digit.
func parseOctal(b []byte) (int64, bool) {
	b = bytes.Trim(b, " \x00")
	if len(b) == 0 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v<<3 | int64(c-'0')
	}
	return v, true
}
