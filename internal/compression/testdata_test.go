package compression

import (
	"archive/tar"
	"bytes"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// tarLike returns about size bytes of a deterministic tar whose files mix
// source-like text, random (already compressed) binaries and repetitive
// data, roughly like a language toolchain layer.
func tarLike(tb testing.TB, size int) []byte {
	tb.Helper()
	rng := rand.New(rand.NewPCG(1, uint64(size)))
	words := strings.Fields("func return if else for range package import type struct interface " +
		"error nil err := = { } ( ) [] string int byte map chan go defer select case switch " +
		"the of to and a in is it you that he was for on are with as I his they be at one have")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; buf.Len() < size; i++ {
		var body []byte
		switch rng.IntN(10) {
		case 0: // incompressible (already compressed) data
			body = make([]byte, rng.IntN(128<<10))
			for j := range body {
				body[j] = byte(rng.Uint32())
			}
		case 1, 2, 3: // binary-like: small alphabet, runs of zeros, repeats
			body = make([]byte, rng.IntN(128<<10))
			for j := 0; j < len(body); j++ {
				switch rng.IntN(8) {
				case 0:
					j += rng.IntN(32) // leave zeros
				case 1:
					if j > 300 { // repeat an earlier stretch
						from := body[j-1-rng.IntN(300):]
						k := copy(body[j:], from[:min(len(from), rng.IntN(24))])
						j += k
					}
				default:
					body[j] = byte(rng.IntN(40))
				}
			}
		default: // text
			var sb strings.Builder
			n := rng.IntN(48 << 10)
			for sb.Len() < n {
				sb.WriteString(words[rng.IntN(len(words))])
				if rng.IntN(12) == 0 {
					sb.WriteString("\n\t")
				} else {
					sb.WriteByte(' ')
				}
			}
			body = []byte(sb.String())
		}
		hdr := &tar.Header{Name: "usr/lib/pkg/file" + strings.Repeat("x", i%7) + string(rune('a'+i%26)), Mode: 0o644, Size: int64(len(body)), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

var tarLikeCache sync.Map

// cachedTarLike memoizes tarLike per size; tests only read the result.
func cachedTarLike(tb testing.TB, size int) []byte {
	if v, ok := tarLikeCache.Load(size); ok {
		return v.([]byte)
	}
	b := tarLike(tb, size)
	tarLikeCache.Store(size, b)
	return b
}
