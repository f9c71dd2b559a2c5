package layer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

func compress(t testing.TB, data []byte, alg compression.Algorithm) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch alg {
	case compression.None:
		return data
	case compression.Gzip:
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		zw.Write(data)
		zw.Close()
	case compression.Zstd:
		zw, _ := zstd.NewWriter(&buf)
		zw.Write(data)
		zw.Close()
	case compression.Xz:
		zw, err := xz.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(data)
		zw.Close()
	case compression.Bzip2:
		cmd := exec.Command("bzip2", "-c")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			t.Skipf("bzip2: %v", err)
		}
		return out
	}
	return buf.Bytes()
}

func openStore(t testing.TB) *blobstore.Store {
	t.Helper()
	s, err := blobstore.Open(t.TempDir(), blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertClean checks that the store has no temp files and exactly want blobs.
func assertClean(t testing.TB, s *blobstore.Store, wantBlobs int) {
	t.Helper()
	tmp, err := s.TempFiles()
	if err != nil || len(tmp) != 0 {
		t.Errorf("temp files left behind: %v %v", tmp, err)
	}
	// Every blob lives in the directory Path names for any of them.
	blobs, _ := os.ReadDir(filepath.Dir(s.Path(v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)})))
	if len(blobs) != wantBlobs {
		t.Errorf("%d blobs in store, want %d", len(blobs), wantBlobs)
	}
}

func blobBytes(t testing.TB, s *blobstore.Store, r Result) []byte {
	t.Helper()
	rc, err := s.Open(r.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decompressBlob(t testing.TB, s *blobstore.Store, r Result) []byte {
	t.Helper()
	alg := compression.Gzip
	if strings.HasSuffix(string(r.MediaType), "zstd") {
		alg = compression.Zstd
	}
	rc, err := compression.NewReader(bytes.NewReader(blobBytes(t, s, r)), alg, compression.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sampleTar(t testing.TB) []byte {
	return testkit.Tar(t, testkit.Dir("etc/"), testkit.File("etc/os-release", "ID=kiln\n"), testkit.Dir("bin/"),
		testkit.File("bin/sh", strings.Repeat("\x7fELF binary ", 5000)), testkit.Symlink("bin/ash", "sh"), testkit.Hardlink("bin/bash", "bin/sh"))
}

// TestBuildSameDiffID: whatever the input compression, the DiffID is the
// sha256 of the uncompressed tar (the xz report: podman and crane hashed the
// xz bytes) and the blob decompresses to exactly that tar.
func TestBuildSameDiffID(t *testing.T) {
	tarball := sampleTar(t)
	for _, alg := range []compression.Algorithm{compression.None, compression.Gzip, compression.Zstd, compression.Bzip2, compression.Xz} {
		for _, out := range []compression.Algorithm{compression.Gzip, compression.Zstd} {
			t.Run(string(alg)+"-"+string(out), func(t *testing.T) {
				s := openStore(t)
				in := compress(t, tarball, alg)
				res, err := Build(context.Background(), bytes.NewReader(in), BuildOptions{Output: out, DiffID: testkit.Digest(tarball)}, s)
				if err != nil {
					t.Fatal(err)
				}
				if res.DiffID.String() != testkit.Digest(tarball) {
					t.Fatalf("DiffID %s, want %s", res.DiffID, testkit.Digest(tarball))
				}
				if res.SourceCompression != alg || res.UncompressedSize != int64(len(tarball)) || res.Entries != 6 {
					t.Errorf("result %+v", res)
				}
				if got := decompressBlob(t, s, res); !bytes.Equal(got, tarball) {
					t.Fatal("blob does not decompress to the input tar")
				}
				if blob := blobBytes(t, s, res); testkit.Digest(blob) != res.Digest.String() || int64(len(blob)) != res.Size {
					t.Fatal("digest or size does not match the blob")
				}
				// The fast path: the input's own bytes become the blob (the
				// test's encoders differ from kiln's, so only it gives these).
				if alg == out && !bytes.Equal(blobBytes(t, s, res), in) {
					t.Error("fast path blob differs from the input bytes")
				}
				assertClean(t, s, 1)
			})
		}
	}
}

// TestBuildFastPathFallback: a gzip input that needs a change is re-read
// from the spool and re-encoded; the result equals a plain-tar build.
func TestBuildFastPathFallback(t *testing.T) {
	tarball := testkit.Tar(t, testkit.Dir("a/"), testkit.File("a/x", strings.Repeat("y", 3<<20)), testkit.Dir("a/"), testkit.File("b", "z"))
	s := openStore(t)
	res, err := Build(context.Background(), bytes.NewReader(compress(t, tarball, compression.Gzip)), BuildOptions{}, s)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Build(context.Background(), bytes.NewReader(tarball), BuildOptions{}, openStore(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != want.Digest || res.DiffID != want.DiffID || res.Changes[ChangeMergedDirectories] != 1 {
		t.Fatalf("got %+v, want %+v", res, want)
	}
	norm, _, _ := normalize(t, tarball, Options{})
	if res.DiffID.String() != testkit.Digest(norm) || !bytes.Equal(decompressBlob(t, s, res), norm) {
		t.Fatal("DiffID is not the sha256 of the normalized tar")
	}
	assertClean(t, s, 1)
}

func TestBuildReproducibleAcrossGOMAXPROCS(t *testing.T) {
	tarball := testkit.Tar(t, testkit.File("big", strings.Repeat("kiln reproducible ", 1<<18)), testkit.File("small", "x"))
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, out := range []compression.Algorithm{compression.Gzip, compression.Zstd} {
		var digests []string
		for _, procs := range []int{1, 2, 1} {
			runtime.GOMAXPROCS(procs)
			res, err := Build(context.Background(), bytes.NewReader(tarball), BuildOptions{Output: out,
				Options: Options{Mode: Reproducible}}, openStore(t))
			if err != nil {
				t.Fatal(err)
			}
			digests = append(digests, res.Digest.String())
		}
		if digests[0] != digests[1] || digests[1] != digests[2] {
			t.Errorf("%s digests differ across GOMAXPROCS: %v", out, digests)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	tarball := sampleTar(t)
	gz := compress(t, tarball, compression.Gzip)
	cases := []struct {
		name   string
		in     []byte
		opts   BuildOptions
		reason failure.Reason
		want   string
	}{
		{"diffID mismatch", gz, BuildOptions{DiffID: testkit.Digest(nil), Options: Options{LayerName: "app"}}, failure.DiffIDMismatch,
			`layer "app": diffID mismatch: declared ` + testkit.Digest(nil) + `, but the uncompressed tar is ` + testkit.Digest(tarball)},
		{"diffID mismatch slow path", tarball, BuildOptions{DiffID: testkit.Digest(nil)}, failure.DiffIDMismatch,
			`diffID mismatch: declared ` + testkit.Digest(nil)},
		{"bad diffID", tarball, BuildOptions{DiffID: "md5:x"}, failure.InvalidSpec, `declared diffID "md5:x"`},
		{"declared mismatch", compress(t, tarball, compression.Xz), BuildOptions{Declared: compression.Gzip, Options: Options{LayerName: "rootfs"}},
			failure.InvalidLayer, `layer "rootfs": declared compression gzip but the bytes are xz`},
		{"truncated gzip", gz[:len(gz)/2], BuildOptions{}, failure.InvalidLayer, `gzip: unexpected EOF`},
		{"truncated xz", func() []byte { b := compress(t, tarball, compression.Xz); return b[:len(b)-30] }(), BuildOptions{}, failure.InvalidLayer, `xz`},
		{"escape in gzip", compress(t, testkit.Tar(t, testkit.File("../x", "")), compression.Gzip), BuildOptions{Options: Options{LayerName: "l"}},
			failure.InvalidLayer, `layer "l": entry 1 "../x": path escapes the layer root`},
		{"escape late in gzip", compress(t, testkit.Tar(t, testkit.Dir("d/"), testkit.Dir("d/"), testkit.File("../x", "")), compression.Gzip), BuildOptions{},
			failure.InvalidLayer, `entry 3 "../x": path escapes the layer root`},
		{"bad output", tarball, BuildOptions{Output: compression.Xz}, failure.InvalidSpec, `output compression "xz" is not supported`},
		{"not a tar", []byte("<html>nope</html>"), BuildOptions{}, failure.InvalidLayer, `not a tar archive`},
		{"ratio bomb", compress(t, testkit.Tar(t, testkit.File("zeros", strings.Repeat("\x00", 64<<20))), compression.Zstd),
			BuildOptions{Options: Options{Limits: Limits{MaxRatio: 100}}}, failure.LimitExceeded, `limit MaxRatio`},
		// MaxDecoderMemory reaches the decoders, sequential and parallel.
		// (A decoder's limit error does not name the layer here; the
		// engine's nameLayer does.)
		{"xz dictionary above MaxDecoderMemory", compress(t, tarball, compression.Xz),
			BuildOptions{Options: Options{LayerName: "app", Limits: Limits{MaxDecoderMemory: 1 << 20}}},
			failure.LimitExceeded, `xz: block 0 needs a 8 MiB dictionary, above the 1 MiB limit`},
		{"multi-block xz dictionary above MaxDecoderMemory", readTestdata(t, "multiblock.tar.xz"),
			BuildOptions{Options: Options{LayerName: "rootfs", Limits: Limits{MaxDecoderMemory: 512 << 10}}},
			failure.LimitExceeded, `xz: block 0 needs a 8 MiB dictionary, above the 512 KiB limit`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			_, err := Build(context.Background(), bytes.NewReader(tc.in), tc.opts, s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if failure.ReasonOf(err) != tc.reason || !failure.IsPermanent(err) {
				t.Fatalf("error %q: reason %s, want permanent %s", err, failure.ReasonOf(err), tc.reason)
			}
			assertClean(t, s, 0)
		})
	}
}

func TestBuildCancelled(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancelAfter{data: compress(t, sampleTar(t), compression.Gzip), cancel: cancel, after: 100}
	_, err := Build(ctx, r, BuildOptions{}, s)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	assertClean(t, s, 0)
}

type cancelAfter struct {
	data   []byte
	cancel func()
	after  int
}

func (r *cancelAfter) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.after)], r.data)
	r.data = r.data[n:]
	r.cancel()
	return n, nil
}

// TestBuildConcurrentEmptyLayers: the Windows ACCESS_DENIED report — many
// builds of one identical layer into one store all succeed, one blob.
func TestBuildConcurrentEmptyLayers(t *testing.T) {
	s := openStore(t)
	empty := make([]byte, 1024)
	var wg sync.WaitGroup
	results := make([]Result, 16)
	errs := make([]error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = Build(context.Background(), bytes.NewReader(empty), BuildOptions{}, s)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("build %d: %v", i, err)
		}
		if results[i].Digest != results[0].Digest || results[i].DiffID.String() != testkit.Digest(empty) {
			t.Fatalf("build %d: %+v", i, results[i])
		}
	}
	assertClean(t, s, 1)
}

func TestBuildWindowsAndReproducible(t *testing.T) {
	in := gnuTar(t, writeTree(t, map[string]string{"app.exe": "MZ", "conf/a.ini": "x"}), ".")
	s := openStore(t)
	res, err := Build(context.Background(), bytes.NewReader(compress(t, in, compression.Gzip)),
		BuildOptions{Options: Options{Windows: true, Mode: Reproducible}}, s)
	if err != nil {
		t.Fatal(err)
	}
	out := decompressBlob(t, s, res)
	if testkit.Digest(out) != res.DiffID.String() {
		t.Fatalf("result %+v", res)
	}
	if got := names(listTar(t, out)); strings.Join(got, " ") != "Files Hives Files/app.exe Files/conf Files/conf/a.ini" {
		t.Fatalf("names %q", got)
	}
	// Building the normalized output again takes the fast path: its gzip
	// bytes (not kiln's encoder's) become the blob.
	again := compress(t, out, compression.Gzip)
	res2, err := Build(context.Background(), bytes.NewReader(again),
		BuildOptions{Options: Options{Windows: true, Mode: Reproducible}}, s)
	if err != nil || res2.DiffID != res.DiffID || !bytes.Equal(blobBytes(t, s, res2), again) {
		t.Fatalf("second build %+v, %v", res2, err)
	}
}

// A multi-block xz (xz -T2 --block-size=128KiB, testdata/README) takes the
// spooled parallel decoder and must give exactly what the sequential path gives.
func TestBuildMultiBlockXzMatchesSequential(t *testing.T) {
	multi := readTestdata(t, "multiblock.tar.xz")
	if !xzBlocksCarrySizes(bufio.NewReader(bytes.NewReader(multi))) {
		t.Fatal("fixture is not recognised as multi-block")
	}
	const wantDiffID = "sha256:06dc21ec5fd8079ff505ccc60df66a47ced46803471c65f2a83254d3aa14e862"
	store := openStore(t)
	res, err := Build(context.Background(), bytes.NewReader(multi), BuildOptions{Options: Options{LayerName: "rootfs"}}, store)
	if err != nil {
		t.Fatal(err)
	}
	if res.DiffID.String() != wantDiffID || res.SourceCompression != compression.Xz {
		t.Fatalf("diffID %s (source %s), want %s", res.DiffID, res.SourceCompression, wantDiffID)
	}
	// The same tar through ulikunitz's single-block writer: sequential path, same layer.
	rc, err := compression.NewReader(bytes.NewReader(multi), compression.Xz, compression.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	single := compress(t, plain, compression.Xz)
	if xzBlocksCarrySizes(bufio.NewReader(bytes.NewReader(single))) {
		t.Fatal("single-block xz taken for multi-block")
	}
	seq, err := Build(context.Background(), bytes.NewReader(single), BuildOptions{Options: Options{LayerName: "rootfs"}}, store)
	if err != nil {
		t.Fatal(err)
	}
	if seq.Digest != res.Digest || seq.DiffID != res.DiffID {
		t.Errorf("parallel %s/%s, sequential %s/%s", res.Digest, res.DiffID, seq.Digest, seq.DiffID)
	}
	if tmp, _ := store.TempFiles(); len(tmp) != 0 {
		t.Errorf("spool left behind: %v", tmp)
	}
	// Truncated multi-block input: a permanent error, no spool left.
	_, err = Build(context.Background(), bytes.NewReader(multi[:len(multi)-100]), BuildOptions{Options: Options{LayerName: "rootfs"}}, store)
	if err == nil || !failure.IsPermanent(err) {
		t.Errorf("truncated multi-block xz: %v, want a permanent error", err)
	}
	if tmp, _ := store.TempFiles(); len(tmp) != 0 {
		t.Errorf("spool left behind after an error: %v", tmp)
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Build commits its blob pinned: a cache smaller than one blob evicts on
// every commit (Commit runs Evict itself), and must still keep the blob
// until the caller releases it.
func TestBuildPinsItsBlobUntilRelease(t *testing.T) {
	tarball := sampleTar(t)
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"fast path", compress(t, tarball, compression.Gzip)},
		{"encode", tarball},
		{"parallel xz", readTestdata(t, "multiblock.tar.xz")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := blobstore.Open(t.TempDir(), blobstore.Options{MaxBytes: 1})
			if err != nil {
				t.Fatal(err)
			}
			res, err := Build(context.Background(), bytes.NewReader(tc.in), BuildOptions{}, s)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Evict(); err != nil {
				t.Fatal(err)
			}
			if !s.Has(res.Digest) {
				t.Fatal("eviction removed the blob Build just committed, before Release")
			}
			res.Release()
			res.Release() // more than once is fine
			if err := s.Evict(); err != nil {
				t.Fatal(err)
			}
			if s.Has(res.Digest) {
				t.Fatal("the released blob survived eviction of a 1-byte cache")
			}
		})
	}
}
