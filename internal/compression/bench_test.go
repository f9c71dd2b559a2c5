package compression

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/klauspost/compress/flate"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

const benchSize = 64 << 20

func benchEncode(b *testing.B, newW func(io.Writer) (io.WriteCloser, error)) {
	in := cachedTarLike(b, benchSize)
	b.SetBytes(int64(len(in)))
	b.ResetTimer()
	var out countWriter
	for b.Loop() {
		out = 0
		w, err := newW(&out)
		if err != nil {
			b.Fatal(err)
		}
		// 32 KiB writes, as io.Copy from a tar stream does.
		for p := in; len(p) > 0; {
			k := min(len(p), 32<<10)
			if _, err := w.Write(p[:k]); err != nil {
				b.Fatal(err)
			}
			p = p[k:]
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(out)/float64(len(in)), "ratio")
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

func BenchmarkEncode(b *testing.B) {
	b.Run("gzip-parallel", func(b *testing.B) {
		benchEncode(b, func(w io.Writer) (io.WriteCloser, error) { return NewWriter(w, Gzip) })
	})
	b.Run("gzip-single-klauspost-level1", func(b *testing.B) {
		benchEncode(b, func(w io.Writer) (io.WriteCloser, error) { return kgzip.NewWriterLevel(w, 1) })
	})
	b.Run("zstd", func(b *testing.B) {
		benchEncode(b, func(w io.Writer) (io.WriteCloser, error) { return NewWriter(w, Zstd) })
	})
}

// BenchmarkGzipLevels measures the candidates for gzipLevel through the
// parallel writer; "ratio" is output/input.
func BenchmarkGzipLevels(b *testing.B) {
	for _, c := range []struct {
		name  string
		level int
	}{{"huffman-only", flate.HuffmanOnly}, {"level1", 1}, {"level2", 2}, {"level3", 3}, {"level6", 6}} {
		b.Run(c.name, func(b *testing.B) {
			benchEncode(b, func(w io.Writer) (io.WriteCloser, error) {
				return newParallelGzipWriter(w, c.level, gzipBlockSize, gzipWorkers()), nil
			})
		})
	}
}

// BenchmarkZstdOptions compares zstd encoder settings (not what NewWriter uses).
func BenchmarkZstdOptions(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []zstd.EOption
	}{
		{"fastest-c1", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1)}},
		{"default-c1", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1)}},
		{"default-c2-async", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(2)}},
		{"default-c2-jobs", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(2), zstd.WithConcurrentBlocks(true)}},
		{"fastest-c2-jobs", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2), zstd.WithConcurrentBlocks(true)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchEncode(b, func(w io.Writer) (io.WriteCloser, error) {
				return zstd.NewWriter(w, append(c.opts, zstd.WithZeroFrames(true))...)
			})
		})
	}
}

func benchDecode(b *testing.B, alg Algorithm, compressed []byte, size int) {
	b.SetBytes(int64(size))
	buf := make([]byte, 1<<20)
	b.ResetTimer()
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(compressed), alg, ReaderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, r, buf)
		if err != nil || n != int64(size) {
			b.Fatalf("decoded %d bytes, err %v", n, err)
		}
		r.Close()
	}
}

func BenchmarkDecode(b *testing.B) {
	in := cachedTarLike(b, benchSize)
	b.Run("gzip", func(b *testing.B) { benchDecode(b, Gzip, encodeWith(b, Gzip, in), len(in)) })
	b.Run("zstd", func(b *testing.B) { benchDecode(b, Zstd, encodeWith(b, Zstd, in), len(in)) })
	xzIn := cliCompress(b, in, "xz", "-T2", "-3", "--block-size=8MiB", "-c")
	b.Run("xz", func(b *testing.B) { benchDecode(b, Xz, xzIn, len(in)) })
	b.Run("xz-parallel", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		buf := make([]byte, 1<<20)
		for b.Loop() {
			r, err := NewParallelXzReader(bytes.NewReader(xzIn), int64(len(xzIn)), ReaderOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.CopyBuffer(io.Discard, r, buf); err != nil || n != int64(len(in)) {
				b.Fatalf("decoded %d bytes, err %v", n, err)
			}
			r.Close()
		}
	})
	b.Run("bzip2", func(b *testing.B) { benchDecode(b, Bzip2, cliCompress(b, in, "bzip2", "-1", "-c"), len(in)) })
}

func encodeWith(tb testing.TB, alg Algorithm, in []byte) []byte {
	tb.Helper()
	var out bytes.Buffer
	w, err := NewWriter(&out, alg)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(in); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// cliCompress runs a compressor CLI over in; benchmarks need realistic
// multi-block xz and bzip2 input that no Go library here writes.
func cliCompress(tb testing.TB, in []byte, name string, args ...string) []byte {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		tb.Skipf("%s not installed", name)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = bytes.NewReader(in)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return out.Bytes()
}

// BenchmarkXzReaders compares kiln's xz container parser with ulikunitz/xz's
// own Reader over the same LZMA2 decoder and the same 1 MiB input buffer.
func BenchmarkXzReaders(b *testing.B) {
	in := cachedTarLike(b, 16<<20)
	comp := cliCompress(b, in, "xz", "-T2", "-3", "--block-size=8MiB", "-c")
	b.Run("kiln", func(b *testing.B) { benchDecode(b, Xz, comp, len(in)) })
	b.Run("ulikunitz", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		buf := make([]byte, 1<<20)
		for b.Loop() {
			r, err := xz.NewReader(bufio.NewReaderSize(bytes.NewReader(comp), 1<<20))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
