// Package compression detects, decompresses and compresses layer streams.
//
// Detection is by magic bytes only; the declared compression of a layer is a
// claim that is checked against them (Check), never trusted. Decoders turn
// corrupt or truncated input into permanent InvalidLayer errors that name the
// algorithm. Encoders are deterministic: the same input always yields the same
// bytes, whatever GOMAXPROCS or the way Write calls are split, because the
// output digest of a layer is part of a reproducible image digest.
package compression

import (
	"bufio"
	"io"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/iox"
)

// Algorithm names a compression format.
type Algorithm string

// Algorithms understood by kiln.
const (
	Auto  Algorithm = "auto" // only valid as a declared value
	None  Algorithm = "none" // an uncompressed tar
	Gzip  Algorithm = "gzip"
	Zstd  Algorithm = "zstd"
	Xz    Algorithm = "xz"
	Bzip2 Algorithm = "bzip2"
)

// Parse turns a spec value into an Algorithm. "" and "auto" mean Auto.
func Parse(s string) (Algorithm, error) {
	switch a := Algorithm(s); a {
	case "", Auto:
		return Auto, nil
	case None, Gzip, Zstd, Xz, Bzip2:
		return a, nil
	default:
		return "", failure.Permanentf(failure.InvalidSpec,
			"unknown compression %q (want one of auto, none, gzip, zstd, xz, bzip2)", s)
	}
}

// Check returns a permanent error naming both algorithms when a layer declares
// a compression that its bytes do not have. Auto and "" accept anything.
func Check(declared, detected Algorithm) error {
	if declared == "" || declared == Auto || declared == detected {
		return nil
	}
	return failure.Permanentf(failure.InvalidLayer,
		"declared compression %s but the bytes are %s", declared, detected)
}

// Open buffers r, detects its compression, checks it against declared and
// returns a reader of the decompressed bytes together with what was detected.
func Open(r io.Reader, declared Algorithm, opts ReaderOptions) (rc io.ReadCloser, detected Algorithm, err error) {
	src := iox.NewReader(r)
	br := bufio.NewReaderSize(src, inputBufferSize)
	detected, err = Detect(br)
	if err != nil {
		return nil, "", err
	}
	if err := Check(declared, detected); err != nil {
		return nil, detected, err
	}
	rc, err = newReader(br, src, detected, opts)
	if err != nil {
		return nil, detected, err
	}
	return rc, detected, nil
}

func errUnsupported(what string, a Algorithm) error {
	return failure.Permanentf(failure.InvalidSpec, "%s: unsupported compression %q", what, string(a))
}
