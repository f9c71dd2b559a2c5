package layer

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

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
