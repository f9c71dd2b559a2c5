package compression

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"runtime"
	"sync"

	"github.com/kiln-build/kiln/internal/iox"
)

// maxParallelXzBlock bounds the uncompressed size of a block decoded into
// memory by NewParallelXzReader; files with bigger blocks (xz without -T
// writes one block per stream) are decoded sequentially.
const maxParallelXzBlock = 64 << 20

// xzBlockLoc is where a block lives in a file, from the stream indexes.
type xzBlockLoc struct {
	offset int64 // of the block header
	rec    xzRecord
	check  byte
}

// NewParallelXzReader decodes the xz file ra (size bytes) with its blocks
// decompressed concurrently, in order. xz -T writes independent blocks and
// lists them in the index at the end of each stream, so the file is read from
// its end first. Single-block files, files with blocks above 64 MiB and files
// whose indexes do not parse are decoded sequentially (the sequential reader
// then reports any corruption precisely). At most GOMAXPROCS+2 decoded blocks
// are held in memory. Close stops the workers.
func NewParallelXzReader(ra io.ReaderAt, size int64, opts ReaderOptions) (io.ReadCloser, error) {
	src := iox.NewReaderAt(ra)
	blocks, err := xzBlockLayout(src, size)
	if err != nil || len(blocks) < 2 || tooBig(blocks) {
		return NewReader(io.NewSectionReader(ra, 0, size), Xz, opts)
	}
	p := newParallelXz(src, blocks, opts.xzLimit(), max(1, runtime.GOMAXPROCS(0)))
	return &decoder{alg: Xz, r: p, srcErr: src.Err, close: p.Close}, nil
}

func tooBig(blocks []xzBlockLoc) bool {
	for _, b := range blocks {
		if b.rec.uncompressed > maxParallelXzBlock {
			return true
		}
	}
	return false
}

// xzBlockLayout reads the streams of an xz file from the end and returns
// every block in file order.
func xzBlockLayout(ra io.ReaderAt, size int64) ([]xzBlockLoc, error) {
	var streams [][]xzBlockLoc
	for pos := size; pos > 0; {
		var err error
		if pos, err = skipPaddingBackward(ra, pos); err != nil || pos == 0 {
			if pos == 0 && err == nil {
				break
			}
			return nil, err
		}
		var blocks []xzBlockLoc
		if blocks, pos, err = xzStreamLayout(ra, pos); err != nil {
			return nil, err
		}
		streams = append(streams, blocks)
	}
	var all []xzBlockLoc
	for i := len(streams) - 1; i >= 0; i-- {
		all = append(all, streams[i]...)
	}
	return all, nil
}

func skipPaddingBackward(ra io.ReaderAt, pos int64) (int64, error) {
	var w [4]byte
	for pos >= 4 {
		if _, err := ra.ReadAt(w[:], pos-4); err != nil {
			return 0, err
		}
		if binary.LittleEndian.Uint32(w[:]) != 0 {
			return pos, nil
		}
		pos -= 4
	}
	if pos != 0 {
		return 0, xzErrorf("file size is not a multiple of 4")
	}
	return 0, nil
}

// xzStreamLayout parses the stream ending at end and returns its blocks and
// where it starts.
func xzStreamLayout(ra io.ReaderAt, end int64) ([]xzBlockLoc, int64, error) {
	if end < 2*xzStreamHeaderSize {
		return nil, 0, xzErrorf("stream too short")
	}
	var footer [12]byte
	if _, err := ra.ReadAt(footer[:], end-12); err != nil {
		return nil, 0, err
	}
	check := footer[9]
	indexSize := (int64(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4
	if err := checkXzFooter(footer[:], check, indexSize); err != nil {
		return nil, 0, err
	}
	indexStart := end - 12 - indexSize
	if indexStart < xzStreamHeaderSize {
		return nil, 0, xzErrorf("index larger than the stream")
	}
	index := make([]byte, indexSize)
	if _, err := ra.ReadAt(index, indexStart); err != nil {
		return nil, 0, err
	}
	records, err := parseXzIndex(index)
	if err != nil {
		return nil, 0, err
	}
	var total int64
	for _, r := range records {
		total += (r.unpadded + 3) &^ 3
	}
	start := indexStart - total - xzStreamHeaderSize
	if start < 0 {
		return nil, 0, xzErrorf("index describes more data than the stream holds")
	}
	hdrCheck, err := readXzStreamHeader(io.NewSectionReader(ra, start, xzStreamHeaderSize))
	if err != nil {
		return nil, 0, err
	}
	if hdrCheck != check {
		return nil, 0, xzErrorf("stream header and footer disagree on the check type")
	}
	blocks := make([]xzBlockLoc, len(records))
	off := start + xzStreamHeaderSize
	for i, r := range records {
		blocks[i] = xzBlockLoc{offset: off, rec: r, check: check}
		off += (r.unpadded + 3) &^ 3
	}
	return blocks, start, nil
}

// parseXzIndex parses a whole index (indicator to CRC32) into its records.
func parseXzIndex(b []byte) ([]xzRecord, error) {
	if len(b) < 8 || b[0] != 0 {
		return nil, xzErrorf("bad index indicator")
	}
	r := bytes.NewReader(b[1:])
	count, err := readXzVarint(r)
	if err != nil || count > uint64(len(b)/2) {
		return nil, xzErrorf("bad index record count")
	}
	records := make([]xzRecord, count)
	for i := range records {
		u, err1 := readXzVarint(r)
		c, err2 := readXzVarint(r)
		if err1 != nil || err2 != nil || u == 0 || u > 1<<62 || c > 1<<62 {
			return nil, xzErrorf("bad index record %d", i)
		}
		records[i] = xzRecord{unpadded: int64(u), uncompressed: int64(c)}
	}
	// Re-read sequentially to verify padding and CRC exactly as the
	// sequential reader does.
	if _, err := readXzIndex(bytes.NewReader(b[1:]), records); err != nil {
		return nil, err
	}
	return records, nil
}

// parallelXz decodes blocks on workers and hands them out in order.
type parallelXz struct {
	results chan chan xzResult // in block order; capacity bounds memory
	stop    chan struct{}
	wg      sync.WaitGroup
	cur     []byte
	err     error
	once    sync.Once
}

type xzResult struct {
	data []byte
	err  error
}

func newParallelXz(ra io.ReaderAt, blocks []xzBlockLoc, limit int64, workers int) *parallelXz {
	p := &parallelXz{results: make(chan chan xzResult, workers), stop: make(chan struct{})}
	jobs := make(chan func(), workers)
	for range workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for job := range jobs {
				job()
			}
		}()
	}
	p.wg.Add(1)
	go func() { // dispatcher: one result slot per block, in order
		defer p.wg.Done()
		defer close(jobs)
		defer close(p.results)
		for i, b := range blocks {
			slot := make(chan xzResult, 1)
			select {
			case p.results <- slot:
			case <-p.stop:
				return
			}
			job := func() { slot <- decodeXzBlockAt(ra, b, i, limit) }
			select {
			case jobs <- job:
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

// decodeXzBlockAt decodes one block whose place and sizes the index gave.
func decodeXzBlockAt(ra io.ReaderAt, b xzBlockLoc, index int, limit int64) xzResult {
	section := io.NewSectionReader(ra, b.offset, (b.rec.unpadded+3)&^3)
	br := bufio.NewReaderSize(section, int(min(inputBufferSize, section.Size())))
	first, err := br.ReadByte()
	if err != nil {
		return xzResult{err: unexpectedEOF(err)}
	}
	if first == 0 {
		return xzResult{err: xzErrorf("block %d: index points at an index", index)}
	}
	blk, err := openXzBlock(br, first, b.check, limit, index, b.rec.uncompressed)
	if err != nil {
		return xzResult{err: err}
	}
	data := make([]byte, b.rec.uncompressed)
	n := 0
	for {
		if n == len(data) {
			// The LZMA2 data must end here; one more read tells.
			var probe [1]byte
			k, err := blk.Read(probe[:])
			if k > 0 {
				return xzResult{err: xzErrorf("block %d: more data than the %d bytes the index declares", index, b.rec.uncompressed)}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return xzResult{err: err}
			}
			continue
		}
		k, err := blk.Read(data[n:])
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			return xzResult{err: err}
		}
	}
	rec, err := blk.finish()
	if err != nil {
		return xzResult{err: err}
	}
	if rec != b.rec {
		return xzResult{err: xzErrorf("index record %d (%d, %d bytes) does not match the block (%d, %d bytes)",
			index, b.rec.unpadded, b.rec.uncompressed, rec.unpadded, rec.uncompressed)}
	}
	return xzResult{data: data}
}

func (p *parallelXz) Read(buf []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		slot, ok := <-p.results
		if !ok {
			p.err = io.EOF
			return 0, io.EOF
		}
		res := <-slot
		p.cur, p.err = res.data, res.err
		if p.err == io.EOF {
			p.err = io.ErrUnexpectedEOF
		}
	}
	n := copy(buf, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close stops dispatching, lets running blocks finish and waits for every
// goroutine.
func (p *parallelXz) Close() error {
	p.once.Do(func() {
		close(p.stop)
		for slot := range p.results {
			_ = slot // queued jobs still fill their buffered slot and exit
		}
		p.wg.Wait()
	})
	return nil
}
