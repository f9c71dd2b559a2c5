package source

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/iox"
	"github.com/kiln-build/kiln/internal/units"
)

// bodyBuffer is the read-ahead for network bodies: it lets Open fetch the
// first bytes before handing the stream out (so failures there are retried)
// and turns small network reads into larger ones for the decompressors.
const bodyBuffer = 256 << 10

// Stream is a source's bytes, hashed and counted as they are read, with the
// declared digest checked at the end and the size limit enforced. It is an
// io.ReadCloser and is not safe for concurrent use.
type Stream struct {
	spec  Spec
	kind  Kind
	want  v1.Hash
	limit int64

	r    io.Reader
	body io.Closer
	h    hash.Hash
	n    int64
	err  error // sticky: once failed or at EOF, every Read returns it

	ctx     context.Context // cancelled by Close or the watchdog
	cancel  context.CancelFunc
	parent  context.Context
	timeout time.Duration
	timer   *time.Timer // nil for in-memory sources
	stalled atomic.Bool
	closed  bool

	// what names a network request in messages ("GET <redacted URL>").
	what string
	// arrived counts body bytes as they come off the network, beneath the
	// read-ahead buffer, so the rate check sees arrivals, not hand-outs.
	arrived  *iox.Reader // nil for in-memory sources
	rate     *rateWindow // nil for in-memory sources or when disabled
	minRate  int64
	window   time.Duration
	rateWait atomic.Bool // the armed timer is the rate window's, not ReadTimeout's
	slow     atomic.Bool

	validators Validators // of the HTTP response, for conditional refetches
}

// Validators returns the cache validators (ETag, Last-Modified) of a URL
// source's response; zero for other kinds.
func (st *Stream) Validators() Validators { return st.validators }

func newStream(parent context.Context, s Spec, kind Kind, want v1.Hash, opts Options, body io.ReadCloser) *Stream {
	ctx, cancel := context.WithCancel(parent)
	return &Stream{
		spec: s, kind: kind, want: want, limit: opts.MaxBytes,
		r: body, body: body, h: sha256.New(),
		ctx: ctx, cancel: cancel, parent: parent, timeout: opts.ReadTimeout,
		minRate: opts.MinRate, window: opts.MinRateWindow,
	}
}

// watch makes st read a network body that can stall or trickle: reads are
// buffered and guarded by a watchdog that cancels st.ctx (and with it the
// request, which must have been made with st.ctx) when a Read makes no
// progress for ReadTimeout, or when the rate window runs out before enough
// bytes arrived.
func (st *Stream) watch(body io.ReadCloser) {
	st.body = body
	st.arrived = iox.NewReader(body)
	st.r = bufio.NewReaderSize(st.arrived, bodyBuffer)
	if st.minRate > 0 {
		st.rate = newRateWindow(st.minRate, st.window)
	}
	st.timer = time.AfterFunc(time.Hour, func() {
		if st.rateWait.Load() {
			st.slow.Store(true)
		} else {
			st.stalled.Store(true)
		}
		st.cancel()
	})
	st.timer.Stop()
}

// errSlow ends a read that completed but closed a rate window short of
// bytes; readError turns it into the message.
var errSlow = errors.New("transfer too slow")

// guarded runs one blocking read under the watchdog. Only time spent inside
// a read counts, for the stall timeout and the rate window alike, so a slow
// consumer never trips either. The timer is armed for whichever runs out
// first.
func (st *Stream) guarded(read func() (int, error)) (int, error) {
	if st.timer == nil {
		if err := st.parent.Err(); err != nil {
			return 0, err
		}
		return read()
	}
	wait, rateFirst := st.timeout, false
	if st.rate != nil && st.rate.left() < wait {
		wait, rateFirst = st.rate.left(), true
	}
	st.rateWait.Store(rateFirst)
	before, start := st.arrived.Count(), time.Now()
	st.timer.Reset(wait)
	n, err := read()
	st.timer.Stop()
	if st.rate != nil && st.rate.add(st.arrived.Count()-before, time.Since(start)) && err == nil {
		// The window closed inside a read that still returned bytes (or
		// before the timer fired): the attempt ends all the same.
		st.slow.Store(true)
		st.cancel()
		err = errSlow
	}
	return n, err
}

// rateWindow enforces Options.MinRate: each window of read time must bring
// need bytes. A window that has brought them ends there and the next one
// starts empty, so an early burst never pays for a later trickle.
type rateWindow struct {
	need   int64
	window time.Duration
	used   time.Duration // read time spent in the current window
	got    int64         // bytes arrived in the current window
}

func newRateWindow(rate int64, window time.Duration) *rateWindow {
	need := int64(float64(rate) * window.Seconds())
	return &rateWindow{need: max(need, 1), window: window}
}

// left is the read time the current window has before it fails.
func (w *rateWindow) left() time.Duration { return max(w.window-w.used, 0) }

// add records n bytes arriving in d of read time and reports whether the
// window ran out short of bytes.
func (w *rateWindow) add(n int64, d time.Duration) bool {
	w.used += d
	w.got += n
	if w.got >= w.need {
		w.used, w.got = 0, 0
		return false
	}
	return w.used >= w.window
}

// prefetch reads the first bytes of a network body into the buffer, so that
// a failure before any byte is handed out can be retried by Open.
func (st *Stream) prefetch() error {
	br := st.r.(*bufio.Reader)
	_, err := st.guarded(func() (int, error) {
		_, err := br.Peek(1)
		return 0, err
	})
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	return st.readError(err)
}

// Read reads the source's bytes.
func (st *Stream) Read(p []byte) (int, error) {
	if st.err != nil {
		return 0, st.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Read at most one byte past the limit: enough to know it is exceeded
	// without handing out more than the limit.
	if room := st.limit - st.n; int64(len(p)) > room+1 {
		p = p[:room+1]
	}
	n, err := st.guarded(func() (int, error) { return st.r.Read(p) })
	if st.n+int64(n) > st.limit {
		n = int(st.limit - st.n)
		err = failure.Permanent(failure.LimitExceeded,
			failure.Layerf(st.spec.Name, "%s is larger than the limit of %d bytes (%s)", st.spec.describe(), st.limit, units.Bytes(st.limit)))
	}
	st.h.Write(p[:n])
	st.n += int64(n)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) && !isClassified(err):
		st.err = st.verify()
	case isClassified(err):
		st.err = err
	default:
		st.err = st.readError(err)
	}
	return n, st.err
}

func isClassified(err error) bool {
	var fe *failure.Error
	return errors.As(err, &fe)
}

// verify is called at EOF: it returns io.EOF when the bytes match the
// declared digest (or none was declared), a DigestMismatch otherwise.
func (st *Stream) verify() error {
	if st.want == (v1.Hash{}) {
		return io.EOF
	}
	if got := st.Digest(); got != st.want {
		return failure.Permanent(failure.DigestMismatch,
			failure.Layerf(st.spec.Name, "fetched bytes have digest %s, spec declares %s", got, st.want))
	}
	return io.EOF
}

// readError classifies a failed body read.
func (st *Stream) readError(err error) error {
	switch {
	case st.slow.Load():
		return failure.Retryable(failure.Layerf(st.spec.Name, "%s: transfer slower than %s/s over %s (received %s)",
			st.request(), units.Bytes(st.minRate), st.window, units.Bytes(st.rate.got)), 0)
	case st.stalled.Load():
		return failure.Retryable(failure.Layerf(st.spec.Name, "reading %s: no data received for %s (after %d bytes)",
			st.spec.describe(), st.timeout, st.n), 0)
	case st.parent.Err() != nil:
		return failure.Layerf(st.spec.Name, "reading %s: %w", st.spec.describe(), st.parent.Err())
	case st.closed:
		return failure.Layerf(st.spec.Name, "read after Close")
	}
	return failure.Retryable(failure.Layerf(st.spec.Name, "reading %s after %d bytes: %w",
		st.spec.describe(), st.n, err), 0)
}

// request names the network request for messages.
func (st *Stream) request() string {
	if st.what != "" {
		return st.what
	}
	return "reading " + st.spec.describe()
}

// Close releases the connection. It is safe to call more than once.
func (st *Stream) Close() error {
	if st.closed {
		return nil
	}
	st.closed = true
	if st.timer != nil {
		st.timer.Stop()
	}
	st.cancel()
	if st.err == nil {
		st.err = failure.Layerf(st.spec.Name, "read after Close")
	}
	return st.body.Close()
}

// Digest returns the sha256 of the bytes read so far (final after EOF).
func (st *Stream) Digest() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(st.h.Sum(nil))}
}

// Size returns the number of bytes read so far.
func (st *Stream) Size() int64 { return st.n }

// Kind returns the kind of source.
func (st *Stream) Kind() Kind { return st.kind }
