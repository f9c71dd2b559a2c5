package layer

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
