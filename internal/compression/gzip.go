package compression

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
)

// Parallel gzip parameters. They are part of every gzip layer digest kiln
// produced: changing any of them changes image digests, so treat them as a
// format.
const (
	// gzipLevel 1, chosen with BenchmarkGzipLevels (2 cores, 64 MiB of
	// tar-like data, parallel writer; output/input ratio):
	//   Huffman-only 700 MB/s 0.525 | level 1 371 MB/s 0.421
	//   level 2      337 MB/s 0.416 | level 3 293 MB/s 0.410 | level 6 213 MB/s 0.392
	// Huffman-only is twice as fast but its blobs are 25% bigger, which costs
	// more in push and storage than it saves; levels 2..6 buy 1-7% smaller
	// blobs for 10-43% of the speed. Single-threaded klauspost level 1 (what
	// crane-like tools do) runs 204 MB/s on the same data.
	gzipLevel = 1
	// gzipBlockSize is the unit of parallelism. Fixed, never derived from
	// GOMAXPROCS, because block boundaries shape the output bytes.
	gzipBlockSize = 1 << 20
	// gzipDictSize is how much of the previous block primes the next one:
	// deflate's whole window, so matches across block boundaries are kept.
	gzipDictSize = 32 << 10
)

// gzipHeader is fixed: no name, no comment, mtime 0, XFL 0, OS 255
// (unknown), so the output depends on the input bytes only.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}

// deflateFinalBlock is an empty, final, fixed-Huffman deflate block: it ends
// the concatenation of sync-flushed block streams.
var deflateFinalBlock = []byte{0x03, 0x00}

func gzipWorkers() int { return max(1, runtime.GOMAXPROCS(0)) }

// gzipBlock is one block of input on its way through a worker.
type gzipBlock struct {
	in   []byte // input; its last gzipDictSize bytes prime the next block
	dict []byte // tail of the previous block (nil for the first)
	out  []byte // compressed, sync-flushed deflate data
	err  error
	done chan struct{}
}

// parallelGzipWriter compresses fixed-size blocks concurrently, each primed
// with the previous block's last 32 KiB and ended with a sync flush, so the
// concatenation is one deflate stream. The CRC and size are computed in
// order on the writer's goroutine.
//
// Memory is bounded: at most 2*workers blocks are queued or being compressed;
// Write blocks when they are (backpressure).
type parallelGzipWriter struct {
	w     io.Writer
	level int

	cur      []byte // block being filled
	prevTail []byte
	crc      uint32
	size     uint32 // ISIZE: length mod 2^32

	jobs    chan *gzipBlock // to workers
	ordered chan *gzipBlock // to the emitter, in input order
	pool    sync.Pool       // []byte input buffers of gzipBlockSize cap
	outPool sync.Pool       // []byte compressed block buffers, recycled by the emitter
	wg      sync.WaitGroup  // workers and emitter
	emitted chan error      // the emitter's result, once

	mu     sync.Mutex
	werr   error // first error of the emitter (writing w)
	closed bool
	err    error // sticky error returned by Write/Close
}

func newParallelGzipWriter(w io.Writer, level, blockSize, workers int) *parallelGzipWriter {
	z := &parallelGzipWriter{
		w:       w,
		level:   level,
		jobs:    make(chan *gzipBlock, workers),
		ordered: make(chan *gzipBlock, 2*workers),
		emitted: make(chan error, 1),
	}
	z.pool.New = func() any { b := make([]byte, 0, blockSize); return &b }
	// Level-1 output is about half the input; the rare block that needs more
	// grows its buffer once and keeps the larger one when recycled.
	z.outPool.New = func() any { b := make([]byte, 0, blockSize/2+1024); return &b }
	z.cur = z.getBuf()
	for range workers {
		z.wg.Add(1)
		go z.worker()
	}
	z.wg.Add(1)
	go z.emit()
	return z
}

func (z *parallelGzipWriter) getBuf() []byte  { return (*z.pool.Get().(*[]byte))[:0] }
func (z *parallelGzipWriter) putBuf(b []byte) { b = b[:0]; z.pool.Put(&b) }

func (z *parallelGzipWriter) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	if z.closed {
		return 0, errors.New("gzip: write after Close")
	}
	z.crc = crc32.Update(z.crc, crc32.IEEETable, p)
	z.size += uint32(len(p))
	n := 0
	for len(p) > 0 {
		k := copy(z.cur[len(z.cur):cap(z.cur)], p)
		z.cur = z.cur[:len(z.cur)+k]
		p, n = p[k:], n+k
		if len(z.cur) == cap(z.cur) {
			if err := z.dispatch(); err != nil {
				z.err = err
				return n, err
			}
		}
	}
	return n, nil
}

// dispatch hands the current block to the workers and the emitter. Sending
// to ordered first keeps the order; it blocks when 2*workers blocks are in
// flight.
func (z *parallelGzipWriter) dispatch() error {
	if err := z.emitErr(); err != nil {
		return err
	}
	in := z.cur
	b := &gzipBlock{in: in, dict: z.prevTail, done: make(chan struct{})}
	// The next block's dictionary must outlive this block's buffer, which
	// the emitter recycles as soon as the block is written; copy it first.
	tail := in[max(0, len(in)-gzipDictSize):]
	z.prevTail = append(make([]byte, 0, len(tail)), tail...)
	z.cur = z.getBuf()
	z.ordered <- b
	z.jobs <- b
	return nil
}

func (z *parallelGzipWriter) worker() {
	defer z.wg.Done()
	var fw *flate.Writer
	var buf bytesWriter
	for b := range z.jobs {
		buf.b = (*z.outPool.Get().(*[]byte))[:0]
		var err error
		if fw == nil {
			fw, err = flate.NewWriterDict(&buf, z.level, b.dict)
		} else {
			// ResetDict leaves no state from the previous block behind
			// (TestGzipResetMatchesFresh), so which worker compresses a
			// block does not matter.
			fw.ResetDict(&buf, b.dict)
		}
		if err == nil {
			_, err = fw.Write(b.in)
		}
		if err == nil {
			err = fw.Flush()
		}
		b.out, b.err = buf.b, err
		close(b.done)
	}
}

// emit writes the header, then each block in order as it completes. After a
// write error it keeps draining (so dispatch never blocks forever) but writes
// nothing more.
func (z *parallelGzipWriter) emit() {
	defer z.wg.Done()
	err := writeAll(z.w, gzipHeader)
	z.setEmitErr(err)
	for b := range z.ordered {
		<-b.done
		if err == nil {
			err = b.err
			if err == nil {
				err = writeAll(z.w, b.out)
			}
			z.setEmitErr(err)
		}
		z.putBuf(b.in)
		if b.out != nil {
			out := b.out[:0]
			z.outPool.Put(&out)
		}
		b.in, b.out, b.dict = nil, nil, nil
	}
	z.emitted <- err
}

func (z *parallelGzipWriter) setEmitErr(err error) {
	if err == nil {
		return
	}
	z.mu.Lock()
	if z.werr == nil {
		z.werr = fmt.Errorf("writing gzip output: %w", err)
	}
	z.mu.Unlock()
}

func (z *parallelGzipWriter) emitErr() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.werr
}

// Close compresses what is left, waits for every block, writes the final
// block and trailer, and stops all goroutines. It is safe to call twice.
func (z *parallelGzipWriter) Close() error {
	if z.closed {
		return z.err
	}
	z.closed = true
	if z.err == nil && len(z.cur) > 0 {
		z.err = z.dispatch()
	}
	close(z.jobs)
	close(z.ordered)
	err := <-z.emitted
	z.wg.Wait()
	if z.err != nil {
		return z.err
	}
	if err != nil {
		z.err = z.emitErr()
		return z.err
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], z.crc)
	binary.LittleEndian.PutUint32(trailer[4:], z.size)
	if err := writeAll(z.w, append(append([]byte{}, deflateFinalBlock...), trailer[:]...)); err != nil {
		z.err = fmt.Errorf("writing gzip trailer: %w", err)
	}
	return z.err
}

// bytesWriter is a minimal append-only writer (bytes.Buffer without the
// read side).
type bytesWriter struct{ b []byte }

func (w *bytesWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func writeAll(w io.Writer, p []byte) error {
	n, err := w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return err
}
