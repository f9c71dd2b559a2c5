package compression

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/klauspost/compress/flate"
)

func binaryPutCRC(dst, hdr []byte) {
	binary.LittleEndian.PutUint32(dst[len(hdr):], crc32.ChecksumIEEE(hdr))
}

// referenceGzip is the format spelled out sequentially with a fresh flate
// writer per block: what the parallel writer must produce byte for byte.
func referenceGzip(t *testing.T, data []byte) []byte {
	var out bytes.Buffer
	out.Write(gzipHeader)
	var dict []byte
	for p := data; len(p) > 0; {
		blk := p[:min(len(p), gzipBlockSize)]
		p = p[len(blk):]
		fw, err := flate.NewWriterDict(&out, gzipLevel, dict)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(blk)
		fw.Flush()
		dict = blk[max(0, len(blk)-gzipDictSize):]
	}
	out.Write(deflateFinalBlock)
	var tr [8]byte
	binary.LittleEndian.PutUint32(tr[:], crc32.ChecksumIEEE(data))
	binary.LittleEndian.PutUint32(tr[4:], uint32(len(data)))
	out.Write(tr[:])
	return out.Bytes()
}

// Reusing a flate writer through ResetDict must leave no trace of the
// previous block, or the output would depend on which worker got a block.
func TestGzipMatchesFreshWriterReference(t *testing.T) {
	data := cachedTarLike(t, 3<<20+333)
	want := referenceGzip(t, data)
	for _, workers := range []int{1, 3} {
		var out bytes.Buffer
		w := newParallelGzipWriter(&out, gzipLevel, gzipBlockSize, workers)
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("%d workers: output differs from the fresh-writer reference", workers)
		}
	}
}

type failingWriter struct{ n int }

var errDiskFull = errors.New("no space left on device")

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errDiskFull
	}
	return len(p), nil
}

// A failing destination surfaces from Write or Close, and no goroutine
// stays behind.
func TestGzipWriterErrorStopsCleanly(t *testing.T) {
	data := cachedTarLike(t, 6<<20)
	for _, limit := range []int{0, 5, 1 << 20} {
		w, _ := NewWriter(&failingWriter{n: limit}, Gzip)
		var err error
		for p := data; len(p) > 0 && err == nil; {
			k := min(len(p), 64<<10)
			_, err = w.Write(p[:k])
			p = p[k:]
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if !errors.Is(err, errDiskFull) {
			t.Fatalf("limit %d: err = %v", limit, err)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Fatalf("limit %d: Write after failure succeeded", limit)
		}
	}
	checkNoGoroutines(t, "parallelGzipWriter")
}

func TestGzipCloseTwice(t *testing.T) {
	w, _ := NewWriter(&bytes.Buffer{}, Gzip)
	w.Write([]byte("x"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
