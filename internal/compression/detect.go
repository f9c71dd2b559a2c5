package compression

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/units"
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
//
// zstd streams may start with skippable frames (RFC 8878 §3.1.2; pzstd
// writes one): they are skipped, within r's buffer (the detection window),
// and what follows must be a zstd frame or the end of the stream.
func Detect(r *bufio.Reader) (Algorithm, error) {
	head, err := peek(r, tarBlockSize)
	if err != nil {
		return "", err
	}
	if len(head) == 0 {
		return "", failure.Permanentf(failure.InvalidLayer, "empty input")
	}
	if isSkippable(head) {
		return detectAfterSkippable(r)
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

// peek returns up to n bytes of r; fewer at the end of the input.
func peek(r *bufio.Reader, n int) ([]byte, error) {
	head, err := r.Peek(n)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("reading the first bytes: %w", err)
	}
	return head, nil
}

// zstd skippable frames: a magic in 0x184D2A50..0x184D2A5F, a little-endian
// 4-byte payload size, then the payload.
const (
	skippableMagicMin    = 0x184D2A50
	skippableMagicMask   = 0xFFFFFFF0
	skippableHeaderBytes = 8
)

func isSkippable(b []byte) bool {
	return len(b) >= 4 && binary.LittleEndian.Uint32(b)&skippableMagicMask == skippableMagicMin
}

// detectAfterSkippable walks the leading skippable frames inside r's buffer
// and requires a zstd frame (or the end of the input: a stream of only
// skippable frames is valid zstd that decodes to nothing) after them.
func detectAfterSkippable(r *bufio.Reader) (Algorithm, error) {
	zstdMagic := magics[1].magic
	window := r.Size()
	for off := 0; ; {
		n := min(off+skippableHeaderBytes, window)
		head, err := peek(r, n)
		if err != nil {
			return "", err
		}
		if len(head) < off {
			return "", failure.Permanentf(failure.InvalidLayer, "zstd: unexpected EOF in a skippable frame (truncated input)")
		}
		rest, atEnd := head[off:], len(head) < n
		switch {
		case len(rest) == 0 && atEnd, bytes.HasPrefix(rest, zstdMagic):
			return Zstd, nil
		case len(rest) < 4 && !atEnd:
			return "", errSkippableWindow(window)
		case !isSkippable(rest):
			return "", failure.Permanentf(failure.InvalidLayer,
				"zstd: the skippable frames at the start end at byte %d and are followed by neither a zstd frame nor the end of the input (next bytes: %x...)",
				off, rest[:min(len(rest), 16)])
		case len(rest) < skippableHeaderBytes && atEnd:
			return "", failure.Permanentf(failure.InvalidLayer, "zstd: unexpected EOF in a skippable frame header (truncated input)")
		case len(rest) < skippableHeaderBytes:
			return "", errSkippableWindow(window)
		}
		next := int64(off) + skippableHeaderBytes + int64(binary.LittleEndian.Uint32(rest[4:]))
		if next > int64(window) {
			return "", errSkippableWindow(window)
		}
		off = int(next)
	}
}

// errSkippableWindow refuses rather than misdetects: what follows the
// skippable frames is beyond what detection may buffer.
func errSkippableWindow(window int) error {
	return failure.Permanentf(failure.LimitExceeded,
		"zstd: the skippable frames at the start of the input are longer than the %s detection window", units.Bytes(int64(window)))
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
