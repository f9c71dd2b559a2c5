package layer

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// ent describes one tar entry for tests.
type ent struct {
	name   string
	typ    byte // 0 means regular file
	body   string
	link   string
	mode   int64
	size   int64 // overrides len(body) in the header when non-zero
	pax    map[string]string
	mtime  time.Time
	uname  string
	atime  time.Time
	format tar.Format
}

func file(name, body string) ent { return ent{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir} }
func symlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeSymlink, link: target}
}
func hardlink(name, target string) ent { return ent{name: name, typ: tar.TypeLink, link: target} }

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// mkTar writes entries with archive/tar.
func mkTar(t testing.TB, entries ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		mt := e.mtime
		if mt.IsZero() {
			mt = testTime
		}
		size := int64(len(e.body))
		if e.size != 0 {
			size = e.size
		}
		if typ != tar.TypeReg && e.size == 0 {
			size = 0
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode, Size: size,
			ModTime: mt, PAXRecords: e.pax, Uname: e.uname, Format: e.format, AccessTime: e.atime}
		if typ == tar.TypeXGlobalHeader {
			h = &tar.Header{Name: e.name, Typeflag: typ, PAXRecords: e.pax}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("writing %q: %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// listTar reads data with archive/tar to EOF and returns its headers.
func listTar(t testing.TB, data []byte) []*tar.Header {
	t.Helper()
	hdrs, err := readAll(data)
	if err != nil {
		t.Fatalf("output is not a valid tar: %v", err)
	}
	return hdrs
}

func readAll(data []byte) ([]*tar.Header, error) {
	tr := tar.NewReader(bytes.NewReader(data))
	var hdrs []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, nil
		}
		if err != nil {
			return hdrs, err
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return hdrs, err
		}
		hdrs = append(hdrs, h)
	}
}

func names(hdrs []*tar.Header) []string {
	var out []string
	for _, h := range hdrs {
		out = append(out, h.Name)
	}
	return out
}

func normalize(t testing.TB, in []byte, opts Options) ([]byte, Stats, error) {
	t.Helper()
	var out bytes.Buffer
	st, err := Normalize(&out, bytes.NewReader(in), opts)
	return out.Bytes(), st, err
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// gnuTar runs the tar CLI in dir and returns the archive.
func gnuTar(t testing.TB, dir string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar CLI not available")
	}
	out := filepath.Join(t.TempDir(), "out.tar")
	cmd := exec.Command("tar", append([]string{"-cf", out, "-C", dir}, args...)...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeTree creates files (name -> content; a trailing "/" makes a dir).
func writeTree(t testing.TB, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if name[len(name)-1] == '/' {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// Raw tar builders, for inputs archive/tar cannot write: several pseudo-
// headers before one entry, a PAX path together with a GNU long name, bytes
// in the prefix field of a GNU header, unknown typeflags.

const (
	magicPOSIX = "ustar\x0000"
	magicGNU   = "ustar  \x00"
	magicV7    = "\x00\x00\x00\x00\x00\x00\x00\x00"
)

// blk is one raw header block.
type blk struct {
	typ   byte
	name  string
	link  string
	size  int
	magic string         // magicPOSIX when empty
	patch map[int]string // raw bytes written at these offsets (prefix field: 345)
}

func (b blk) bytes() []byte {
	h := make([]byte, blockSize)
	copy(h[0:100], b.name)
	copy(h[100:108], "0000644\x00")
	copy(h[108:116], "0000000\x00")
	copy(h[116:124], "0000000\x00")
	copy(h[124:136], fmt.Sprintf("%011o\x00", b.size))
	copy(h[136:148], "14621234567\x00")
	h[156] = b.typ
	copy(h[157:257], b.link)
	magic := b.magic
	if magic == "" {
		magic = magicPOSIX
	}
	copy(h[257:265], magic)
	for off, s := range b.patch {
		copy(h[off:], s)
	}
	fixChecksum(h)
	return h
}

// meta is a pseudo-header ('x', 'g', 'L', 'K') with its body and padding.
func meta(typ byte, body string) []byte {
	b := blk{typ: typ, name: "././@meta", size: len(body)}.bytes()
	b = append(b, body...)
	return append(b, make([]byte, padding(int64(len(body))))...)
}

// paxRec formats one PAX record.
func paxRec(k, v string) string {
	n := len(k) + len(v) + 3
	n += len(strconv.Itoa(n))
	if len(strconv.Itoa(n)) != len(strconv.Itoa(n-1)) {
		n++
	}
	return fmt.Sprintf("%d %s=%s\n", n, k, v)
}

// rawTar concatenates blocks and appends the end-of-archive marker.
func rawTar(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return append(out, make([]byte, trailerLen)...)
}
