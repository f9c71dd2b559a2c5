package layer

import (
	"errors"
	"fmt"
	"io"

	"github.com/kiln-build/kiln/internal/failure"
)

// errHeaderLimit is returned by the recorder when one entry's header blocks
// exceed MaxHeaderBytes.
var errHeaderLimit = errors.New("header too large")

// recorder keeps the raw bytes archive/tar reads while parsing one header,
// so that an entry which needs no change is written out exactly as it came.
type recorder struct {
	r   io.Reader
	buf []byte
	max int64 // < 0: unlimited
}

func (r *recorder) reset(max int64) {
	r.buf = r.buf[:0]
	r.max = max
}

func (r *recorder) Read(p []byte) (int, error) {
	if r.max >= 0 {
		room := r.max - int64(len(r.buf))
		if room <= 0 {
			return 0, errHeaderLimit
		}
		if int64(len(p)) > room {
			p = p[:room]
		}
	}
	m, err := r.r.Read(p)
	r.buf = append(r.buf, p[:m]...)
	return m, err
}

// LimitReader counts a decompressed tar stream and enforces MaxUncompressedBytes
// and MaxRatio on it: Normalize reads every layer through one, and a base
// archive is held to the same limits with another. It remembers its first
// error, a limit or one of the stream's own (io.EOF aside), and returns it
// from every later Read, so that the tar reader above never reads past it
// and a failing source is not mistaken for bad tar data (Err).
type LimitReader struct {
	r          io.Reader
	n          int64
	lim        Limits // with defaults: -1 is no limit
	compressed func() int64
	name       string
	err        error
}

// NewLimitReader returns a LimitReader of r. Zero fields of lim take their
// defaults; compressed, when set, reports how many compressed bytes have
// produced r's bytes so far, for MaxRatio; name, when set, names the layer
// in the limit errors.
func NewLimitReader(r io.Reader, lim Limits, compressed func() int64, name string) *LimitReader {
	return &LimitReader{r: r, lim: lim.WithDefaults(), compressed: compressed, name: name}
}

func (c *LimitReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	m, err := c.r.Read(p)
	c.n += int64(m)
	if lerr := c.checkLimits(); lerr != nil {
		c.err = lerr
		return m, lerr
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return m, err
}

// Count returns the number of bytes read so far.
func (c *LimitReader) Count() int64 { return c.n }

// Err returns the first error other than io.EOF: a LimitExceeded failure or
// the stream's own.
func (c *LimitReader) Err() error { return c.err }

func (c *LimitReader) checkLimits() error {
	if limit := c.lim.MaxUncompressedBytes; limit >= 0 && c.n > limit {
		return failure.Permanent(failure.LimitExceeded, named(c.name, fmt.Errorf(
			"uncompressed size exceeds %d bytes (limit MaxUncompressedBytes)", limit)))
	}
	if c.lim.MaxRatio < 0 || c.compressed == nil || c.n <= ratioGrace {
		return nil
	}
	if z := c.compressed(); z > 0 && c.n/z > c.lim.MaxRatio {
		return failure.Permanent(failure.LimitExceeded, named(c.name, fmt.Errorf(
			"decompresses to more than %d times its compressed size (%d bytes from %d; limit MaxRatio)",
			c.lim.MaxRatio, c.n, z)))
	}
	return nil
}

// named names the layer in err: `layer "name": ...` as a
// failure.LayerError, so that the engine can tell it is named. Without a
// name (a base archive's layers, tests) err is returned as is.
func named(layer string, err error) error {
	if layer == "" {
		return err
	}
	return &failure.LayerError{Layer: layer, Err: err}
}

// sourceError wraps an error of the input stream, keeping its class. A
// limit error, or one the source already names this layer in (a digest
// mismatch found at the end of the stream, a broken download), says all
// there is to say and is returned as is: the layer is named once.
func (n *normalizer) sourceError() error {
	err := n.in.Err()
	var fe *failure.Error
	if errors.As(err, &fe) && fe.Reason == failure.LimitExceeded {
		return err
	}
	var le *failure.LayerError
	if errors.As(err, &le) && le.Layer == n.opts.LayerName && n.opts.LayerName != "" {
		return err
	}
	return n.named(fmt.Errorf("reading the tar stream: %w", err))
}

// finish writes the end-of-archive marker and drains the input to EOF, so
// that a decoder reaches (and verifies) the end of its stream.
func (n *normalizer) finish() error {
	raw := n.rec.buf // the zero blocks archive/tar read: 0, 1 or 2 of them
	if n.in.Count() == 0 {
		return n.invalid("empty input: not a tar archive")
	}
	if n.opts.Windows {
		if err := n.windowsRoots(); err != nil {
			return err
		}
	}
	keep := !n.opts.reproducible() && len(raw) == trailerLen
	trailer := raw
	if !keep {
		trailer = make([]byte, trailerLen)
		if len(raw) != trailerLen {
			n.stats.count(ChangeTrailer, 1)
			n.stats.Changed = true
		}
	}
	if err := n.write(trailer); err != nil {
		return err
	}
	return n.drainTrailing(keep)
}

// drainTrailing reads what follows the end marker: zeros are kept when
// keep (GNU tar's record padding), anything else is dropped.
func (n *normalizer) drainTrailing(keep bool) error {
	if n.copyBuf == nil {
		n.copyBuf = make([]byte, ioBuffer)
	}
	for {
		m, err := n.br.Read(n.copyBuf)
		if m > 0 {
			if keep && isZero(n.copyBuf[:m]) {
				if werr := n.write(n.copyBuf[:m]); werr != nil {
					return werr
				}
			} else {
				keep = false
				n.stats.count(ChangeTrailer, 1)
				n.stats.Changed = true
			}
		}
		if n.stats.Changed && n.opts.stopOnChange {
			return errChanged
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if n.in.Err() != nil {
				return n.sourceError()
			}
			return n.named(fmt.Errorf("reading after the end of the archive: %w", err))
		}
	}
}
