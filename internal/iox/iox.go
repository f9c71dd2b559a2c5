// Package iox holds the io wrappers the streaming stages share: a reader that
// stops once its context ends, and readers and writers that remember the
// error of the stream they wrap, so that whoever consumes them (a decoder,
// a tar parser, a copy into the blob store) can tell a failing source or sink
// apart from a format error of its own, and classify it accordingly.
package iox

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
)

// ContextReader returns a reader of r that fails with ctx.Err() once ctx is
// done. A Read already blocked inside r is not interrupted; what matters is
// that a long pipeline stops at the next Read instead of decoding to the end.
func ContextReader(ctx context.Context, r io.Reader) io.Reader {
	return &ctxReader{ctx: ctx, r: r}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// lastError keeps the last error other than io.EOF. It is locked because
// decoders read ahead in goroutines of their own (zstd, parallel xz) while
// the consumer asks.
type lastError struct {
	mu  sync.Mutex
	err error
}

func (l *lastError) record(err error) {
	if err == nil || err == io.EOF {
		return
	}
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

// Err returns the last error other than io.EOF the wrapped stream returned,
// or nil.
func (l *lastError) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Reader passes reads through, counting the bytes and remembering the
// stream's last error (Err). Count and Err may be called from another
// goroutine than the one reading.
type Reader struct {
	r io.Reader
	n atomic.Int64
	lastError
}

// NewReader wraps r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	r.record(err)
	return n, err
}

// Count returns the number of bytes read so far.
func (r *Reader) Count() int64 { return r.n.Load() }

// ReaderAt is Reader for an io.ReaderAt, read concurrently (without a count:
// concurrent reads at offsets do not add up to a position).
type ReaderAt struct {
	ra io.ReaderAt
	lastError
}

// NewReaderAt wraps ra.
func NewReaderAt(ra io.ReaderAt) *ReaderAt { return &ReaderAt{ra: ra} }

func (r *ReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.ra.ReadAt(p, off)
	r.record(err)
	return n, err
}

// Writer passes writes through, counting the bytes and remembering the last
// error (Err).
type Writer struct {
	w io.Writer
	n atomic.Int64
	lastError
}

// NewWriter wraps w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n.Add(int64(n))
	w.record(err)
	return n, err
}

// Count returns the number of bytes written so far.
func (w *Writer) Count() int64 { return w.n.Load() }
