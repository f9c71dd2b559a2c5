package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/testkit"
)

// benchCorpus is ~64 MiB of rootfs-like tar content, generated
// deterministically: many small text files, some compressible binaries and
// some incompressible ones.
type benchCorpus struct {
	entries []benchEntry
	tar     []byte
	inputs  map[compression.Algorithm][]byte
}

type benchEntry struct {
	name string
	body []byte
}

var (
	corpusOnce sync.Once
	corpus     *benchCorpus
)

func loadCorpus(b *testing.B) *benchCorpus {
	b.Helper()
	corpusOnce.Do(func() { corpus = makeCorpus(b) })
	return corpus
}

var words = strings.Fields(`the of and to in is that for it as with was on be by this are or from
at an not have which but all were when there can more been one has their if would will what so no
config server layer image build kiln tar gzip digest registry manifest return error func package`)

func makeCorpus(b *testing.B) *benchCorpus {
	rng := rand.New(rand.NewPCG(1, 2))
	c := &benchCorpus{inputs: map[compression.Algorithm][]byte{}}
	total := 0
	add := func(name string, body []byte) {
		c.entries = append(c.entries, benchEntry{name, body})
		total += len(body)
	}
	for i := 0; total < 40<<20; i++ { // text: ~40 MiB in files of 1-16 KiB
		var sb strings.Builder
		for n := 1024 + rng.IntN(15<<10); sb.Len() < n; {
			sb.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(12) == 0 {
				sb.WriteByte('\n')
			} else {
				sb.WriteByte(' ')
			}
		}
		add(fmt.Sprintf("usr/share/doc/pkg%03d/file%05d.txt", i/100, i), []byte(sb.String()))
	}
	for i := range 6 { // compressible binaries: 2 MiB of low-entropy bytes
		body := make([]byte, 2<<20)
		for j := range body {
			body[j] = byte(rng.IntN(16)) * byte(j%7)
		}
		add(fmt.Sprintf("usr/lib/libbench%d.so", i), body)
	}
	for i := range 6 { // incompressible: 2 MiB random
		body := make([]byte, 2<<20)
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		add(fmt.Sprintf("usr/bin/random%d", i), body)
	}
	var buf bytes.Buffer
	writeCorpus(&buf, c.entries, "")
	c.tar = buf.Bytes()
	c.inputs[compression.None] = c.tar
	c.inputs[compression.Gzip] = cliCompress(b, c.tar, "gzip", "-6", "-n", "-c")
	c.inputs[compression.Zstd] = cliCompress(b, c.tar, "zstd", "-3", "-T2", "-q", "-c")
	c.inputs[compression.Xz] = cliCompress(b, c.tar, "xz", "-1", "-T2", "-c")
	return c
}

func writeCorpus(w io.Writer, entries []benchEntry, prefix string) error {
	tw := tar.NewWriter(w)
	mt := time.Unix(1.7e9, 0)
	dirs := map[string]bool{}
	for _, e := range entries {
		for d := e.name; strings.Contains(d, "/"); {
			d = d[:strings.LastIndex(d, "/")]
			if dirs[prefix+d] {
				break
			}
			dirs[prefix+d] = true
			if err := tw.WriteHeader(&tar.Header{Name: prefix + d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: prefix + e.name, Typeflag: tar.TypeReg, Mode: 0o644,
			Size: int64(len(e.body)), ModTime: mt}); err != nil {
			return err
		}
		if _, err := tw.Write(e.body); err != nil {
			return err
		}
	}
	return tw.Close()
}

func cliCompress(b *testing.B, data []byte, tool string, args ...string) []byte {
	cmd := exec.Command(tool, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		b.Skipf("%s: %v", tool, err)
	}
	return out
}

func BenchmarkPipeline(b *testing.B) {
	c := loadCorpus(b)
	for _, tc := range []struct {
		name    string
		in, out compression.Algorithm
	}{
		{"tar-gzip", compression.None, compression.Gzip},
		{"gzip-gzip(fastpath)", compression.Gzip, compression.Gzip},
		{"xz-gzip", compression.Xz, compression.Gzip},
		{"zstd-gzip", compression.Zstd, compression.Gzip},
		{"tar-zstd", compression.None, compression.Zstd},
		{"zstd-zstd(fastpath)", compression.Zstd, compression.Zstd},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := openStore(b)
			in := c.inputs[tc.in]
			inDigest := testkit.Digest(in)
			b.SetBytes(int64(len(c.tar)))
			b.ResetTimer()
			for range b.N {
				res, err := Build(context.Background(), bytes.NewReader(in), BuildOptions{Output: tc.out}, s)
				if err != nil {
					b.Fatal(err)
				}
				if fast := res.Digest.String() == inDigest; fast != (tc.in == tc.out) {
					b.Fatalf("fast path (the input became the blob) = %v", fast)
				}
			}
		})
	}
}

// BenchmarkFileHashing is the cost of Options.Files (the SBOM's per-file
// sha256): each case once without and once with the list, on the two paths
// a layer takes (encode, and the fast path that only decodes and checks).
func BenchmarkFileHashing(b *testing.B) {
	c := loadCorpus(b)
	for _, tc := range []struct {
		name    string
		in, out compression.Algorithm
	}{
		{"tar-gzip", compression.None, compression.Gzip},
		{"gzip-gzip(fastpath)", compression.Gzip, compression.Gzip},
	} {
		for _, files := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/files=%t", tc.name, files), func(b *testing.B) {
				s := openStore(b)
				in := c.inputs[tc.in]
				b.SetBytes(int64(len(c.tar)))
				b.ResetTimer()
				for range b.N {
					opts := BuildOptions{Output: tc.out}
					if files {
						opts.Files = NewFileList(0)
					}
					res, err := Build(context.Background(), bytes.NewReader(in), opts, s)
					if err != nil {
						b.Fatal(err)
					}
					if files && len(opts.Files.Files) != len(c.entries) {
						b.Fatalf("listed %d files, want %d", len(opts.Files.Files), len(c.entries))
					}
					res.Release()
				}
			})
		}
	}
}

func BenchmarkRawEncoder(b *testing.B) {
	c := loadCorpus(b)
	for _, alg := range []compression.Algorithm{compression.Gzip, compression.Zstd} {
		b.Run(string(alg), func(b *testing.B) {
			b.SetBytes(int64(len(c.tar)))
			for range b.N {
				w, err := compression.NewWriter(io.Discard, alg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := w.Write(c.tar); err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGunzipSHA256 is the fast path's limit: decoding the gzip input
// and hashing the tar, nothing else.
func BenchmarkGunzipSHA256(b *testing.B) {
	c := loadCorpus(b)
	b.SetBytes(int64(len(c.tar)))
	for range b.N {
		r, err := compression.NewReader(bytes.NewReader(c.inputs[compression.Gzip]), compression.Gzip, compression.ReaderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.CopyBuffer(h, r, make([]byte, ioBuffer)); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}

// BenchmarkPeakHeap1GiB streams a generated 1 GiB tar through Build (tar
// in, gzip out) and reports the peak heap in use. The generator keeps only
// ~4 MiB of file bodies live (it repeats them under new names), and the
// 64 MiB corpus of the other benchmarks is not loaded, so that GC slack
// of unrelated data does not count.
func BenchmarkPeakHeap1GiB(b *testing.B) {
	entries := smallCorpus()
	size := 0
	for _, e := range entries {
		size += len(e.body) + 1024
	}
	rounds := (1<<30)/size + 1
	for range b.N {
		s := openStore(b)
		pr, pw := io.Pipe()
		go func() {
			var err error
			for r := 0; r < rounds && err == nil; r++ {
				err = writeCorpusBody(pw, entries, fmt.Sprintf("r%04d/", r))
			}
			if err == nil {
				_, err = pw.Write(make([]byte, 1024))
			}
			pw.CloseWithError(err)
		}()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		peak := base
		done := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					var m runtime.MemStats
					runtime.ReadMemStats(&m)
					peak = max(peak, m.HeapInuse)
				}
			}
		}()
		res, err := Build(context.Background(), pr, BuildOptions{}, s)
		close(done)
		<-sampled
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(res.UncompressedSize)
		b.ReportMetric(float64(peak-base)/(1<<20), "peak-heap-MiB")
	}
}

// smallCorpus is ~4 MiB of text files and binaries.
func smallCorpus() []benchEntry {
	rng := rand.New(rand.NewPCG(3, 4))
	var entries []benchEntry
	for i := range 300 {
		var sb strings.Builder
		for n := 1024 + rng.IntN(7<<10); sb.Len() < n; {
			sb.WriteString(words[rng.IntN(len(words))])
			sb.WriteByte(' ')
		}
		entries = append(entries, benchEntry{fmt.Sprintf("doc/f%04d.txt", i), []byte(sb.String())})
	}
	for i := range 2 {
		body := make([]byte, 1<<20)
		for j := range body {
			body[j] = byte(rng.Uint32()) & byte(0x0f<<(4*i))
		}
		entries = append(entries, benchEntry{fmt.Sprintf("bin/b%d", i), body})
	}
	return entries
}

// writeCorpusBody writes the entries as a tar without the end marker, so
// that several rounds concatenate into one archive.
func writeCorpusBody(w io.Writer, entries []benchEntry, prefix string) error {
	var buf bytes.Buffer
	for _, e := range entries {
		buf.Reset()
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&tar.Header{Name: prefix + e.name, Typeflag: tar.TypeReg, Mode: 0o644,
			Size: int64(len(e.body)), ModTime: time.Unix(1.7e9, 0)}); err != nil {
			return err
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		if _, err := w.Write(e.body); err != nil {
			return err
		}
		if pad := padding(int64(len(e.body))); pad > 0 {
			if _, err := w.Write(zeroBlock[:pad]); err != nil {
				return err
			}
		}
	}
	return nil
}

// BenchmarkPathBookkeeping: inputs built to make path checks expensive
// (deep names near the 4096-byte limit, long components) stay linear in
// the input size. Before the per-component path tree, every entry hashed
// each of its ~2000 parent prefixes: "deep" ran at ~1 MB/s.
func BenchmarkPathBookkeeping(b *testing.B) {
	deep := strings.Repeat("a/", 2040)
	long := strings.Repeat(strings.Repeat("l", 255)+"/", 15)
	for _, tc := range []struct {
		name    string
		n       int
		name_   func(i int) string
		windows bool
	}{
		{"deep", 1000, func(i int) string { return fmt.Sprintf("%sf%04d", deep, i) }, false},
		{"deep-windows", 1000, func(i int) string { return fmt.Sprintf("%sf%04d", deep, i) }, true},
		{"deep-distinct", 200, func(i int) string { return fmt.Sprintf("d%04d/%sf", i, deep[:4000]) }, false},
		{"long-components", 2000, func(i int) string { return fmt.Sprintf("%sf%04d", long, i) }, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for i := range tc.n {
				if err := tw.WriteHeader(&tar.Header{Name: tc.name_(i), Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX}); err != nil {
					b.Fatal(err)
				}
			}
			if err := tw.Close(); err != nil {
				b.Fatal(err)
			}
			in := buf.Bytes()
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for range b.N {
				if _, err := Normalize(io.Discard, bytes.NewReader(in), Options{Windows: tc.windows}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
