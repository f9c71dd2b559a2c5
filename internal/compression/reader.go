package compression

import (
	"bufio"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/iox"
	"github.com/kiln-build/kiln/internal/units"
)

// inputBufferSize is the bufio size in front of every decoder: ulikunitz/xz is
// about 4x slower reading small chunks, and klauspost/flate has a fast path
// for *bufio.Reader.
const inputBufferSize = 1 << 20

// DefaultXzMemoryLimit caps the xz dictionary when ReaderOptions leaves it 0.
const DefaultXzMemoryLimit = 256 << 20

// DefaultZstdMemoryLimit caps the zstd window when ReaderOptions leaves it 0.
// zstd -19 uses 8 MiB, --ultra -22 128 MiB; --long=31 (2 GiB) is refused.
const DefaultZstdMemoryLimit = 256 << 20

// zstdDecoderConcurrency is how many zstd blocks are decoded ahead of the
// reader. Two overlap decoding with the consumer (hashing, tar checks) on two
// cores; more only costs memory.
const zstdDecoderConcurrency = 2

// ReaderOptions tunes the decoders.
type ReaderOptions struct {
	// XzMemoryLimit caps the xz dictionary size in bytes (default 256 MiB);
	// streams declaring a bigger one are rejected with LimitExceeded before
	// anything that size is allocated. Negative: no limit but the format's.
	XzMemoryLimit int64
	// ZstdMemoryLimit caps the zstd window size in bytes (default 256 MiB);
	// frames declaring a bigger one are rejected with LimitExceeded.
	// Negative: no limit but the format's.
	ZstdMemoryLimit int64
}

// zstdMaxWindow is the largest window the zstd format allows (and the
// largest klauspost/compress accepts as a limit).
const zstdMaxWindow = 1<<41 + 7*1<<38

func (o ReaderOptions) xzLimit() int64 {
	return limitOr(o.XzMemoryLimit, DefaultXzMemoryLimit, math.MaxInt64)
}

func (o ReaderOptions) zstdLimit() int64 {
	return limitOr(o.ZstdMemoryLimit, DefaultZstdMemoryLimit, zstdMaxWindow)
}

// limitOr resolves a limit: 0 is def, negative is unlimited.
func limitOr(v, def, unlimited int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return unlimited
	}
	return v
}

// NewReader returns a reader of the bytes r decompresses to under alg. None
// returns r itself behind a no-op Close. Close releases the decoder (zstd runs
// goroutines) but never closes r: the caller owns it.
//
// Errors of the returned reader are classified: corrupt or truncated
// compressed data is a permanent InvalidLayer error naming the algorithm;
// errors that came from r itself (a dropped connection) are passed through
// untouched so that their own classification, or the default "transient",
// decides whether the fetch is retried.
func NewReader(r io.Reader, alg Algorithm, opts ReaderOptions) (io.ReadCloser, error) {
	if alg == None {
		return io.NopCloser(r), nil
	}
	src := iox.NewReader(r)
	return newReader(bufio.NewReaderSize(src, inputBufferSize), src, alg, opts)
}

// newReader decodes br, which buffers src; Open calls it directly so that its
// detection buffer is also the decoder's input buffer.
// src remembers the input's last error, so that a decoder error can be told
// apart from an I/O error of the source.
func newReader(br *bufio.Reader, src *iox.Reader, alg Algorithm, opts ReaderOptions) (io.ReadCloser, error) {
	d := &decoder{alg: alg, srcErr: src.Err, zstdLimit: opts.zstdLimit()}
	var err error
	switch alg {
	case None:
		return io.NopCloser(br), nil
	case Gzip:
		var zr *gzip.Reader
		zr, err = gzip.NewReader(br) // multistream is the default
		if err == nil {
			d.r, d.close = zr, zr.Close
		}
	case Zstd:
		var zr *zstd.Decoder
		zr, err = zstd.NewReader(br,
			zstd.WithDecoderConcurrency(zstdDecoderConcurrency),
			zstd.WithDecoderMaxMemory(uint64(opts.zstdLimit())),
			zstd.WithDecoderMaxWindow(uint64(opts.zstdLimit())))
		if err == nil {
			d.r = zr
			d.close = func() error { zr.Close(); return nil }
		}
	case Xz:
		d.r = newXzReader(br, opts.xzLimit())
	case Bzip2:
		d.r = bzip2.NewReader(br)
	default:
		return nil, errUnsupported("decoding", alg)
	}
	if err != nil {
		return nil, d.classify(err)
	}
	return d, nil
}

// decoder classifies the errors of a decompressing reader.
type decoder struct {
	alg    Algorithm
	r      io.Reader
	srcErr func() error // the input's last error, if any
	close  func() error
	err    error // sticky: a decoder is never read past its first error

	zstdLimit int64 // for the LimitExceeded message
}

func (d *decoder) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	if err != nil {
		d.err = d.classify(err)
	}
	return n, d.err
}

func (d *decoder) Close() error {
	if d.err == nil {
		d.err = fmt.Errorf("%s: read after Close", d.alg)
	}
	if d.close != nil {
		c := d.close
		d.close = nil
		return c()
	}
	return nil
}

func (d *decoder) classify(err error) error {
	var fe *failure.Error
	switch {
	case err == io.EOF:
		return io.EOF
	case d.srcErr() != nil && errors.Is(err, d.srcErr()):
		return err // the source failed, not the data
	case errors.As(err, &fe):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return failure.Permanentf(failure.InvalidLayer, "%s: unexpected EOF (truncated input)", d.alg)
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return failure.Permanentf(failure.LimitExceeded, "%s: %v (limit %s)", d.alg, err, units.Bytes(d.zstdLimit))
	}
	// Libraries prefix some messages with their name ("gzip: invalid header");
	// say it once.
	msg := strings.TrimPrefix(err.Error(), string(d.alg)+": ")
	if d.alg == Bzip2 {
		msg = strings.TrimPrefix(msg, "bzip2 data invalid: ")
		msg = "invalid data: " + msg
	}
	return failure.Permanent(failure.InvalidLayer, &decodeError{msg: string(d.alg) + ": " + msg, err: err})
}

// decodeError rewords a library error but keeps it in the chain.
type decodeError struct {
	msg string
	err error
}

func (e *decodeError) Error() string { return e.msg }
func (e *decodeError) Unwrap() error { return e.err }
