package compression

import (
	"archive/tar"
	"bufio"
	"bytes"
	stdgzip "compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/kiln-build/kiln/internal/failure"
)

func tarWithFormat(t *testing.T, f tar.Format) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "etc/hostname", Mode: 0o644, Size: 5, Format: f}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("kiln\n"))
	tw.Close()
	return buf.Bytes()
}

// v7Tar turns a ustar archive into a v7 one: no magic, checksum recomputed.
func v7Tar(t *testing.T) []byte {
	b := tarWithFormat(t, tar.FormatUSTAR)
	h := b[:512]
	clear(h[257:512])
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], []byte(strings.Repeat("0", 6-len(itoa8(sum)))+itoa8(sum)+"\x00 "))
	return b
}

func itoa8(n int) string {
	s := ""
	for ; n > 0; n /= 8 {
		s = string(rune('0'+n%8)) + s
	}
	return s
}

func TestDetect(t *testing.T) {
	corruptV7 := v7Tar(t)
	corruptV7[0] ^= 1
	for _, tc := range []struct {
		name    string
		in      []byte
		want    Algorithm
		wantErr string
	}{
		{"gzip", []byte{0x1f, 0x8b, 8, 0, 0}, Gzip, ""},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0}, Zstd, ""},
		{"zstd after a skippable frame", withSkippable([]byte{0x28, 0xb5, 0x2f, 0xfd, 0}, pzstdFrame), Zstd, ""},
		{"zstd after 16 skippable frames, one per magic", withSkippable([]byte{0x28, 0xb5, 0x2f, 0xfd, 0}, everySkippableMagic()...), Zstd, ""},
		{"zstd after an empty skippable frame", withSkippable([]byte{0x28, 0xb5, 0x2f, 0xfd, 0}, skippable(0x184D2A53, 0)), Zstd, ""},
		{"only skippable frames", withSkippable(nil, pzstdFrame, skippable(0x184D2A51, 10)), Zstd, ""},
		{"skippable frame then gzip", withSkippable([]byte{0x1f, 0x8b, 8, 0}, pzstdFrame), "",
			"zstd: the skippable frames at the start end at byte 12 and are followed by neither a zstd frame nor the end of the input (next bytes: 1f8b0800...)"},
		{"skippable frame then a tar", withSkippable(tarWithFormat(t, tar.FormatUSTAR)[:16], pzstdFrame), "",
			"zstd: the skippable frames at the start end at byte 12 and are followed by neither a zstd frame nor the end of the input (next bytes: 6574632f686f7374...)"},
		{"truncated skippable frame header", pzstdFrame[:6], "", "zstd: unexpected EOF in a skippable frame header (truncated input)"},
		{"truncated skippable frame payload", skippable(0x184D2A50, 100)[:50], "", "zstd: unexpected EOF in a skippable frame (truncated input)"},
		{"skippable magic 0x184D2A4F is not one", []byte{0x4f, 0x2a, 0x4d, 0x18, 4, 0, 0, 0}, "", "not a tar archive (first bytes: 4f2a4d1804000000...)"},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4}, Xz, ""},
		{"bzip2", []byte("BZh91AY&SY"), Bzip2, ""},
		{"ustar", tarWithFormat(t, tar.FormatUSTAR), None, ""},
		{"gnu", tarWithFormat(t, tar.FormatGNU), None, ""},
		{"pax", tarWithFormat(t, tar.FormatPAX), None, ""},
		{"v7", v7Tar(t), None, ""},
		{"empty tar", make([]byte, 1024), None, ""},
		{"v7 with a bad checksum", corruptV7, "", "not a tar archive (first bytes: 6474632f686f73746e616d6500000000...)"},
		{"html", []byte("<html><body>404</body></html>"), "", "not a tar archive (first bytes: 3c68746d6c3e3c626f64793e3430343c...)"},
		{"empty", nil, "", "empty input"},
		{"1 byte", []byte{0x1f}, "", "not a tar archive (first bytes: 1f...)"},
		{"short text", []byte("hello"), "", "not a tar archive (first bytes: 68656c6c6f...)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(bytes.NewReader(tc.in))
			got, err := Detect(br)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Detect() error = %v, want %q", err, tc.wantErr)
				}
				if failure.ReasonOf(err) != failure.InvalidLayer || !failure.IsPermanent(err) {
					t.Errorf("error %v is not a permanent InvalidLayer", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Detect() = %q, %v; want %q", got, err, tc.want)
			}
			rest, _ := io.ReadAll(br)
			if !bytes.Equal(rest, tc.in) {
				t.Errorf("Detect consumed input: %d of %d bytes left", len(rest), len(tc.in))
			}
		})
	}
}

// pzstdFrame is the skippable frame pzstd writes first: magic 0x184D2A50,
// a 4-byte payload holding the size of the zstd frame that follows.
var pzstdFrame = []byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 0x10, 0x27, 0, 0}

// skippable returns a skippable frame (RFC 8878 §3.1.2) with magic m and n
// payload bytes.
func skippable(m uint32, n int) []byte {
	f := binary.LittleEndian.AppendUint32(nil, m)
	f = binary.LittleEndian.AppendUint32(f, uint32(n))
	return append(f, bytes.Repeat([]byte{0xa5}, n)...)
}

func everySkippableMagic() [][]byte {
	var out [][]byte
	for m := uint32(0x184D2A50); m <= 0x184D2A5F; m++ {
		out = append(out, skippable(m, int(m&0xf)))
	}
	return out
}

// withSkippable prepends frames to stream.
func withSkippable(stream []byte, frames ...[]byte) []byte {
	var out []byte
	for _, f := range frames {
		out = append(out, f...)
	}
	return append(out, stream...)
}

// Skippable frames are walked inside the reader's buffer only; frames
// longer than it are refused, never misdetected.
func TestDetectSkippableFramesBeyondTheWindow(t *testing.T) {
	zstdFrame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"one long frame", withSkippable(zstdFrame, skippable(0x184D2A50, 5000))},
		{"many short frames", withSkippable(zstdFrame, bytes.Repeat(pzstdFrame, 400))},
		{"a frame declaring 4 GiB", withSkippable(zstdFrame, []byte{0x50, 0x2a, 0x4d, 0x18, 0xff, 0xff, 0xff, 0xff})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Detect(bufio.NewReaderSize(bytes.NewReader(tc.in), 4096))
			want := "zstd: the skippable frames at the start of the input are longer than the 4 KiB detection window"
			if err == nil || err.Error() != want || failure.ReasonOf(err) != failure.LimitExceeded {
				t.Fatalf("err = %v, want LimitExceeded %q", err, want)
			}
		})
	}
	// Within the window a long frame is fine.
	in := withSkippable(zstdFrame, skippable(0x184D2A50, 4000))
	if got, err := Detect(bufio.NewReaderSize(bytes.NewReader(in), 4096)); err != nil || got != Zstd {
		t.Fatalf("Detect = %s, %v; want zstd", got, err)
	}
}

// A stream written by the klauspost encoder behind a hand-made skippable
// frame is detected, passes a declared zstd and decodes to its data.
func TestOpenZstdWithSkippableFrame(t *testing.T) {
	data := cachedTarLike(t, 256<<10)
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	in := withSkippable(buf.Bytes(), pzstdFrame)
	for _, declared := range []Algorithm{Auto, Zstd} {
		rc, detected, err := Open(bytes.NewReader(in), declared, ReaderOptions{})
		if err != nil || detected != Zstd {
			t.Fatalf("Open(%s) = %s, %v; want zstd", declared, detected, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("declared %s: decoded %d bytes, %v; want the %d input bytes", declared, len(got), err, len(data))
		}
	}
	_, detected, err := Open(bytes.NewReader(in), Gzip, ReaderOptions{})
	if detected != Zstd || err == nil || err.Error() != "declared compression gzip but the bytes are zstd" {
		t.Fatalf("declared gzip: %s, %v", detected, err)
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		declared, detected Algorithm
		wantErr            string
	}{
		{Auto, Xz, ""},
		{"", None, ""},
		{Gzip, Gzip, ""},
		{None, None, ""},
		{Gzip, Xz, "declared compression gzip but the bytes are xz"},
		{None, Gzip, "declared compression none but the bytes are gzip"},
		{Zstd, None, "declared compression zstd but the bytes are none"},
	} {
		err := Check(tc.declared, tc.detected)
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("Check(%q, %q) = %v", tc.declared, tc.detected, err)
			}
			continue
		}
		if err == nil || err.Error() != tc.wantErr || failure.ReasonOf(err) != failure.InvalidLayer {
			t.Errorf("Check(%q, %q) = %v, want InvalidLayer %q", tc.declared, tc.detected, err, tc.wantErr)
		}
	}
}

func TestParse(t *testing.T) {
	for s, want := range map[string]Algorithm{"": Auto, "auto": Auto, "none": None, "gzip": Gzip, "zstd": Zstd, "xz": Xz, "bzip2": Bzip2} {
		if got, err := Parse(s); err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v", s, got, err)
		}
	}
	_, err := Parse("lz4")
	if err == nil || !strings.Contains(err.Error(), `unknown compression "lz4"`) || !failure.IsPermanent(err) {
		t.Errorf("Parse(lz4) error = %v", err)
	}
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ulikunitzXz(t *testing.T, in []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 1 << 20}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(in)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// compressedInputs returns, per test case, compressed bytes and what they
// decode to.
func compressedInputs(t *testing.T) []struct {
	name   string
	alg    Algorithm
	in     []byte
	want   []byte
	concat bool // several streams: a cut between two is a valid, shorter input
} {
	fixture := readFixture(t, "fixture.tar")
	// Small enough that the truncation and corruption tests can decode it
	// hundreds of times; multi-block gzip is covered by the writer tests.
	data := cachedTarLike(t, 32<<10)
	gz := encodeWith(t, Gzip, data)
	return []struct {
		name   string
		alg    Algorithm
		in     []byte
		want   []byte
		concat bool
	}{
		{"none", None, data, data, false},
		{"gzip", Gzip, gz, data, false},
		{"gzip multi-member", Gzip, append(append([]byte{}, gz...), encodeWith(t, Gzip, fixture)...), append(append([]byte{}, data...), fixture...), true},
		{"gzip empty", Gzip, encodeWith(t, Gzip, nil), nil, false},
		{"zstd", Zstd, encodeWith(t, Zstd, data), data, false},
		{"zstd empty", Zstd, encodeWith(t, Zstd, nil), nil, false},
		{"zstd after a pzstd skippable frame", Zstd, withSkippable(encodeWith(t, Zstd, data), pzstdFrame), data, false},
		{"zstd after two skippable frames", Zstd, withSkippable(encodeWith(t, Zstd, data), skippable(0x184D2A5F, 300), pzstdFrame), data, false},
		{"xz ulikunitz", Xz, ulikunitzXz(t, data), data, false},
		{"xz ulikunitz empty", Xz, ulikunitzXz(t, nil), nil, false},
		{"xz multi-block crc64", Xz, readFixture(t, "fixture-blocks.tar.xz"), fixture, false},
		{"xz sha256", Xz, readFixture(t, "fixture-sha256.tar.xz"), fixture, false},
		{"xz crc32", Xz, readFixture(t, "fixture-crc32.tar.xz"), fixture, false},
		{"xz no check", Xz, readFixture(t, "fixture-nocheck.tar.xz"), fixture, false},
		{"xz two streams", Xz, readFixture(t, "fixture-concat.tar.xz"), append(append([]byte{}, fixture...), fixture...), true},
		{"xz stream padding", Xz, append(readFixture(t, "fixture-crc32.tar.xz"), 0, 0, 0, 0, 0, 0, 0, 0), fixture, true},
		{"bzip2", Bzip2, readFixture(t, "fixture.tar.bz2"), fixture, false},
		{"bzip2 two streams", Bzip2, readFixture(t, "fixture-concat.tar.bz2"), append(append([]byte{}, fixture...), fixture...), true},
	}
}

func TestOpenRoundTrip(t *testing.T) {
	for _, tc := range compressedInputs(t) {
		t.Run(tc.name, func(t *testing.T) {
			for _, declared := range []Algorithm{Auto, tc.alg} {
				rc, detected, err := Open(bytes.NewReader(tc.in), declared, ReaderOptions{})
				if tc.want == nil && tc.alg == None {
					continue
				}
				if err != nil {
					t.Fatalf("Open(%s): %v", declared, err)
				}
				if detected != tc.alg {
					t.Errorf("detected %s, want %s", detected, tc.alg)
				}
				got, err := io.ReadAll(rc)
				if err != nil {
					t.Fatalf("reading: %v", err)
				}
				if !bytes.Equal(got, tc.want) {
					t.Fatalf("decoded %d bytes, want %d (content differs)", len(got), len(tc.want))
				}
				if err := rc.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
	}
}

func TestOpenDeclaredMismatch(t *testing.T) {
	_, detected, err := Open(bytes.NewReader(readFixture(t, "fixture-crc32.tar.xz")), Gzip, ReaderOptions{})
	if detected != Xz || err == nil || err.Error() != "declared compression gzip but the bytes are xz" {
		t.Fatalf("Open = %s, %v", detected, err)
	}
}

func TestXzUnsupportedFilter(t *testing.T) {
	rc, _, err := Open(bytes.NewReader(readFixture(t, "fixture-bcj.tar.xz")), Auto, ReaderOptions{})
	if err == nil {
		_, err = io.ReadAll(rc)
	}
	if err == nil || err.Error() != "xz: block 0: 2 filters; only a lone LZMA2 filter is supported" || failure.ReasonOf(err) != failure.InvalidLayer {
		t.Fatalf("err = %v", err)
	}
}

// Our gzip output must be readable by the standard library and klauspost,
// including as one member of a multi-member stream.
func TestGzipReadableByOtherReaders(t *testing.T) {
	data := cachedTarLike(t, 2<<20+12345)
	one := encodeWith(t, Gzip, data)
	two := append(append([]byte{}, one...), one...)
	want := append(append([]byte{}, data...), data...)
	for name, open := range map[string]func(io.Reader) (io.Reader, error){
		"stdlib":    func(r io.Reader) (io.Reader, error) { return stdgzip.NewReader(r) },
		"klauspost": func(r io.Reader) (io.Reader, error) { return kgzip.NewReader(r) },
	} {
		zr, err := open(bytes.NewReader(two))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes, err %v", name, len(got), err)
		}
	}
}

func TestNewWriterRejectsOtherAlgorithms(t *testing.T) {
	for _, a := range []Algorithm{Xz, Bzip2, None, Auto} {
		if _, err := NewWriter(io.Discard, a); err == nil || !strings.Contains(err.Error(), "unsupported compression") {
			t.Errorf("NewWriter(%s) error = %v", a, err)
		}
	}
}

// decodeAll returns what a reader produced and its error.
func decodeAll(in []byte, alg Algorithm, opts ReaderOptions) ([]byte, error) {
	rc, err := NewReader(bytes.NewReader(in), alg, opts)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestTruncatedInput(t *testing.T) {
	for _, tc := range compressedInputs(t) {
		if tc.alg == None || len(tc.want) == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			// A cut in the middle: the documented message.
			_, err := decodeAll(tc.in[:len(tc.in)/2+3], tc.alg, ReaderOptions{})
			want := string(tc.alg) + ": unexpected EOF (truncated input)"
			if err == nil || err.Error() != want || failure.ReasonOf(err) != failure.InvalidLayer {
				t.Fatalf("half: err = %v, want InvalidLayer %q", err, want)
			}
			// Every other cut: some permanent error naming the algorithm.
			step := max(1, len(tc.in)/53)
			for n := 1; n < len(tc.in); n += step {
				checkPermanent(t, tc.in[:n], tc.alg, tc.want, tc.concat, "cut at "+itoa(n))
			}
			for n := len(tc.in) - 16; n < len(tc.in); n++ {
				if n > 0 {
					checkPermanent(t, tc.in[:n], tc.alg, tc.want, tc.concat, "cut at "+itoa(n))
				}
			}
		})
	}
}

func checkPermanent(t *testing.T, in []byte, alg Algorithm, want []byte, concat bool, what string) {
	t.Helper()
	got, err := decodeAll(in, alg, ReaderOptions{})
	if err == nil && concat && len(got) <= len(want) && bytes.Equal(got, want[:len(got)]) {
		return // cut exactly between two streams
	}
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if !failure.IsPermanent(err) || !strings.HasPrefix(err.Error(), string(alg)+": ") {
		t.Fatalf("%s: error %q (%T) is not a permanent %s error", what, err, errors.Unwrap(err), alg)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// Flipped bytes never panic or hang; the result is either a permanent error
// or, where a format leaves a byte unchecked (gzip mtime, OS byte), the
// original data.
func TestCorruptedInput(t *testing.T) {
	for _, tc := range compressedInputs(t) {
		if tc.alg == None || len(tc.want) == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			step := max(1, len(tc.in)/67)
			for i := 0; i < len(tc.in); i += step {
				for _, mask := range []byte{0x01, 0xff} {
					in := append([]byte{}, tc.in...)
					in[i] ^= mask
					got, err := decodeAll(in, tc.alg, ReaderOptions{})
					if err == nil {
						if !bytes.Equal(got, tc.want) {
							t.Fatalf("byte %d ^ %#x: decoded wrong data without an error", i, mask)
						}
						continue
					}
					if !failure.IsPermanent(err) {
						t.Fatalf("byte %d ^ %#x: error %q is not permanent", i, mask, err)
					}
				}
			}
		})
	}
}

// errSource fails after delivering some bytes, like a dropped connection.
type errSource struct {
	data []byte
	err  error
}

func (s *errSource) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, s.err
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

// A failing source is not corrupt data: its error passes through unchanged
// (and so stays retryable).
func TestSourceErrorPassesThrough(t *testing.T) {
	errReset := errors.New("connection reset by peer")
	for _, tc := range compressedInputs(t) {
		if len(tc.want) == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			src := &errSource{data: tc.in[:len(tc.in)/2], err: errReset}
			rc, _, err := Open(src, Auto, ReaderOptions{})
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			if !errors.Is(err, errReset) || failure.IsPermanent(err) {
				t.Fatalf("err = %v, want the source's error, not permanent", err)
			}
		})
	}
}

func TestXzDictionaryLimit(t *testing.T) {
	in := ulikunitzXz(t, cachedTarLike(t, 64<<10)) // 1 MiB dictionary
	_, err := decodeAll(in, Xz, ReaderOptions{XzMemoryLimit: 512 << 10})
	want := "xz: block 0 needs a 1 MiB dictionary, above the 512 KiB limit"
	if err == nil || err.Error() != want || failure.ReasonOf(err) != failure.LimitExceeded {
		t.Fatalf("err = %v, want LimitExceeded %q", err, want)
	}
	if _, err := decodeAll(in, Xz, ReaderOptions{XzMemoryLimit: 1 << 20}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if _, err := decodeAll(in, Xz, ReaderOptions{XzMemoryLimit: -1}); err != nil {
		t.Fatalf("without a limit: %v", err)
	}
}

// A block header may declare a 4 GiB dictionary in a few bytes; it must be
// refused before anything is allocated.
func TestXzHugeDictionaryRefused(t *testing.T) {
	in := append([]byte{}, readFixture(t, "fixture-crc32.tar.xz")...)
	// Block header at offset 12: size byte, flags, filter id 0x21, props size 1, dict prop.
	if in[12] != 0x02 || in[13] != 0x00 || in[14] != 0x21 || in[15] != 0x01 {
		t.Fatalf("unexpected block header %x", in[12:24])
	}
	in[16] = 40
	hdr := in[12 : 16+4]
	binaryPutCRC(in[12:24], hdr)
	_, err := decodeAll(in, Xz, ReaderOptions{})
	want := "xz: block 0 needs a 4.0 GiB dictionary, above the 256 MiB limit"
	if err == nil || err.Error() != want || failure.ReasonOf(err) != failure.LimitExceeded {
		t.Fatalf("err = %v, want LimitExceeded %q", err, want)
	}
}

func TestZstdWindowLimit(t *testing.T) {
	data := cachedTarLike(t, 4<<20)
	var buf bytes.Buffer
	w, _ := zstd.NewWriter(&buf, zstd.WithWindowSize(4<<20), zstd.WithEncoderConcurrency(1))
	w.Write(data)
	w.Close()
	_, err := decodeAll(buf.Bytes(), Zstd, ReaderOptions{ZstdMemoryLimit: 1 << 20})
	if err == nil || !strings.HasPrefix(err.Error(), "zstd: ") || !strings.HasSuffix(err.Error(), "(limit 1 MiB)") || failure.ReasonOf(err) != failure.LimitExceeded {
		t.Fatalf("err = %v, want LimitExceeded", err)
	}
	if _, err := decodeAll(buf.Bytes(), Zstd, ReaderOptions{ZstdMemoryLimit: -1}); err != nil {
		t.Fatalf("without a limit: %v", err)
	}
}

// Determinism: the same input encodes to the same bytes whatever
// GOMAXPROCS and however Write calls are split.
func TestEncodersAreDeterministic(t *testing.T) {
	data := cachedTarLike(t, determinismSize)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, alg := range []Algorithm{Gzip, Zstd} {
		t.Run(string(alg), func(t *testing.T) {
			var ref []byte
			for _, c := range []struct{ procs, split int }{{2, len(data)}, {1, 1000}, {2, 32<<10 + 1}, {3, 1<<20 + 7}} {
				runtime.GOMAXPROCS(c.procs)
				got := encodeSplit(t, alg, data, c.split)
				if ref == nil {
					ref = got
					continue
				}
				if !bytes.Equal(got, ref) {
					t.Fatalf("GOMAXPROCS=%d, writes of %d bytes: output differs (%d vs %d bytes)", c.procs, c.split, len(got), len(ref))
				}
			}
		})
	}
}

func encodeSplit(t *testing.T, alg Algorithm, data []byte, split int) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := NewWriter(&out, alg)
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		k := min(split, len(p))
		if _, err := w.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
