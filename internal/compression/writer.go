package compression

import (
	"io"

	"github.com/klauspost/compress/zstd"
)

// NewWriter returns a deterministic encoder writing alg (Gzip or Zstd) to w:
// the same input bytes always produce the same output bytes regardless of
// GOMAXPROCS, timing or how Write calls are split. Close flushes the trailer
// and releases goroutines; it does not close w. Close must be called, also
// after a failed Write.
func NewWriter(w io.Writer, alg Algorithm) (io.WriteCloser, error) {
	switch alg {
	case Gzip:
		return newParallelGzipWriter(w, gzipLevel, gzipBlockSize, gzipWorkers()), nil
	case Zstd:
		return newZstdWriter(w)
	default:
		return nil, errUnsupported("encoding", alg)
	}
}

// zstd parameters. They are part of every zstd layer digest kiln produced:
// changing any of them changes image digests, so treat them as a format.
const (
	zstdLevel = zstd.SpeedDefault
)

func newZstdWriter(w io.Writer) (io.WriteCloser, error) {
	return zstd.NewWriter(w,
		zstd.WithEncoderLevel(zstdLevel),
		// One encoder: output then depends on the input only (blocks are cut
		// at fixed sizes from the internal buffer, never from Write sizes).
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true),
		// An empty layer must still be a valid zstd stream, not zero bytes.
		zstd.WithZeroFrames(true),
	)
}
