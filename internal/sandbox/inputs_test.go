package sandbox

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/ulikunitz/xz"
)

// generated caches one GenerateInputs for the package's tests: the xz
// encoder is slow under -race, and only the determinism test needs a second run.
var generated = sync.OnceValues(GenerateInputs)

func TestGenerateInputsIsDeterministic(t *testing.T) {
	// Two generations at once: half the wall time on two cores, and a check
	// that generation shares no state.
	var b map[string][]byte
	var errB error
	done := make(chan struct{})
	go func() { defer close(done); b, errB = GenerateInputs() }()
	a, err := generated()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if errB != nil {
		t.Fatal(errB)
	}
	for _, name := range []string{RootfsFile, AppFile, WindowsAppFile} {
		if len(a[name]) == 0 {
			t.Fatalf("%s: not generated", name)
		}
		if !bytes.Equal(a[name], b[name]) {
			t.Errorf("%s: two runs gave different bytes", name)
		}
	}
	if len(a) != 3 {
		t.Errorf("generated %d files, want 3", len(a))
	}
	if n := len(a[AppFile]); n > 1<<20 {
		t.Errorf("%s is %d bytes: too big for a ConfigMap", AppFile, n)
	}
}

// readTar lists a tar's headers by name, failing on a malformed archive.
func readTar(t *testing.T, r io.Reader) ([]*tar.Header, map[string]*tar.Header) {
	t.Helper()
	tr := tar.NewReader(r)
	var list []*tar.Header
	byName := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return list, byName
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		list = append(list, h)
		byName[h.Name] = h
	}
}

func TestRootfsXzDecompressesToRootfsTar(t *testing.T) {
	files, err := generated()
	if err != nil {
		t.Fatal(err)
	}
	want, err := RootfsTar()
	if err != nil {
		t.Fatal(err)
	}
	zr, err := xz.NewReader(bytes.NewReader(files[RootfsFile]))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("xz decodes to %d bytes that differ from RootfsTar (%d bytes)", len(got), len(want))
	}
	_, hs := readTar(t, bytes.NewReader(got))
	for _, c := range []struct {
		name     string
		typ      byte
		mode     int64
		linkname string
	}{
		{"tmp/", tar.TypeDir, 0o1777, ""},
		{"sbin/init", tar.TypeLink, 0o755, "bin/busybox"},
		{"usr/bin/ls", tar.TypeSymlink, 0o777, "/bin/busybox"},
		{"bin/sh", tar.TypeSymlink, 0o777, "busybox"},
		{"etc/passwd", tar.TypeReg, 0o644, ""},
	} {
		h := hs[c.name]
		if h == nil {
			t.Errorf("%s: missing", c.name)
			continue
		}
		if h.Typeflag != c.typ || h.Mode != c.mode || h.Linkname != c.linkname {
			t.Errorf("%s: type %c mode %o link %q, want %c %o %q", c.name, h.Typeflag, h.Mode, h.Linkname, c.typ, c.mode, c.linkname)
		}
	}
	if h := hs["bin/busybox"]; h == nil || h.Size < 1<<20 {
		t.Errorf("bin/busybox should be a pseudo binary of a few MB, got %+v", h)
	}
}

func TestWindowsLayerIsShapedLikeTarC(t *testing.T) {
	files, err := generated()
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(files[WindowsAppFile]))
	if err != nil {
		t.Fatal(err)
	}
	list, _ := readTar(t, zr)
	var names []string
	for _, h := range list {
		names = append(names, h.Name)
	}
	want := []string{"./", "./app/", "./app/server.exe", "./app/config.json"}
	if len(names) != len(want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %q, want %q", names, want)
		}
	}
}

func TestWriteInputs(t *testing.T) {
	dir := t.TempDir()
	names, err := WriteInputs(dir, map[string][]byte{"b.tar": []byte("b"), "sub/a.tar": []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || names[0] != "b.tar" || names[1] != "sub/a.tar" {
		t.Errorf("names %q", names)
	}
	_, err = WriteInputs(dir, map[string][]byte{"../x": nil})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(`writing input "../x": name must stay inside`)) {
		t.Errorf("escape: got %v", err)
	}
}
