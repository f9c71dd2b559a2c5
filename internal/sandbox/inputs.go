package sandbox

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kiln-build/kiln/internal/testkit"
	"github.com/ulikunitz/xz"
)

// Names of the generated sample inputs, as the samples' URLs and ConfigMap
// keys name them.
const (
	RootfsFile     = "rootfs.tar.xz"
	AppFile        = "app.tar.gz"
	WindowsAppFile = "windows-app.tar.gz"
)

// busyboxApplets get a /bin/busybox symlink each, as busybox --install does.
var busyboxApplets = []string{
	"awk", "basename", "cat", "chmod", "cp", "cut", "date", "dirname", "du", "env",
	"find", "grep", "gzip", "head", "id", "less", "ln", "ls", "mkdir", "mv",
	"printf", "ps", "readlink", "rm", "sed", "sort", "tail", "tar", "tee", "touch",
	"tr", "uname", "uniq", "vi", "wc", "wget", "xargs", "yes",
}

// pseudoBinary returns size deterministic bytes that compress like a real
// executable: an ELF magic, text-like tables and some high-entropy code.
func pseudoBinary(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, 0, size)
	b = append(b, 0x7f, 'E', 'L', 'F', 2, 1, 1, 0)
	words := []string{"usage: ", "applet ", "not found\n", "permission denied\n", "%s: %s\n", "/proc/self/exe\x00", "BusyBox v1.36.1\x00"}
	for len(b) < size {
		if rng.IntN(3) == 0 {
			chunk := make([]byte, 256)
			for i := range chunk {
				chunk[i] = byte(rng.Uint32())
			}
			b = append(b, chunk...)
			continue
		}
		for i := 0; i < 32; i++ {
			b = append(b, words[rng.IntN(len(words))]...)
		}
	}
	return b[:size]
}

// rootfsEntries is a small busybox-style root filesystem: applet symlinks to
// an absolute /bin/busybox, a hardlink, a sticky /tmp and the usual /etc files.
func rootfsEntries() []testkit.Entry {
	es := []testkit.Entry{
		testkit.Dir("bin/"),
		testkit.File("bin/busybox", string(pseudoBinary(1, 2<<20))).WithMode(0o755),
		testkit.Symlink("bin/sh", "busybox"),
		testkit.Dir("etc/"),
		testkit.File("etc/group", "root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n"),
		testkit.File("etc/hostname", "kiln-demo\n"),
		testkit.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/false\n"),
		testkit.Dir("home/"),
		testkit.Dir("home/nonroot/").WithMode(0o700),
		testkit.Dir("root/").WithMode(0o700),
		testkit.Dir("sbin/"),
		testkit.Hardlink("sbin/init", "bin/busybox").WithMode(0o755),
		testkit.Dir("tmp/").WithMode(0o1777),
		testkit.Dir("usr/"),
		testkit.Dir("usr/bin/"),
		testkit.Dir("var/"),
		testkit.Dir("var/log/"),
	}
	for _, a := range busyboxApplets {
		es = append(es, testkit.Symlink("usr/bin/"+a, "/bin/busybox"))
	}
	return es
}

// appEntries is the application layer: a server binary and its config.
func appEntries() []testkit.Entry {
	return []testkit.Entry{
		testkit.Dir("app/"),
		testkit.Dir("app/bin/"),
		testkit.File("app/bin/server", string(pseudoBinary(2, 96<<10))).WithMode(0o755),
		testkit.File("app/config.yaml", "listen: :8080\nlog:\n  level: info\n"),
	}
}

// windowsAppEntries is what `tar -C dir .` writes for a Windows app: a "./"
// root entry and "./"-prefixed names. crane append turned "./" into a second
// "Files" entry ("duplicate file path: Files"); kiln must shape it.
func windowsAppEntries() []testkit.Entry {
	return []testkit.Entry{
		testkit.Dir("./"),
		testkit.Dir("./app/"),
		testkit.File("./app/server.exe", string(append([]byte("MZ\x90\x00"), pseudoBinary(3, 64<<10)...))).WithMode(0o755),
		testkit.File("./app/config.json", "{\"listen\": \":8080\"}\n"),
	}
}

// writeTar writes entries as a tar with fixed owners and times
// (testkit.Time), so inputs are the same bytes on every run and machine.
func writeTar(es []testkit.Entry) ([]byte, error) {
	var buf bytes.Buffer
	if err := testkit.WriteTar(&buf, es...); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipBytes compresses with an empty gzip header (no name, zero mtime), so the
// output depends on the input only.
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}

func xzBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := xz.NewWriter(&buf)
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	return buf.Bytes(), nil
}

// RootfsTar is the uncompressed busybox-style rootfs; its sha256 is the
// DiffID a correct build records for rootfs.tar.xz.
func RootfsTar() ([]byte, error) { return writeTar(rootfsEntries()) }

// AppTar is the uncompressed app layer.
func AppTar() ([]byte, error) { return writeTar(appEntries()) }

// WindowsAppTar is the uncompressed `tar -C dir .` Windows layer.
func WindowsAppTar() ([]byte, error) { return writeTar(windowsAppEntries()) }

// GenerateInputs returns the sample inputs by file name: rootfs.tar.xz,
// app.tar.gz and windows-app.tar.gz. Same bytes on every call.
func GenerateInputs() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, g := range []struct {
		name     string
		tar      func() ([]byte, error)
		compress func([]byte) ([]byte, error)
	}{
		{RootfsFile, RootfsTar, xzBytes},
		{AppFile, AppTar, gzipBytes},
		{WindowsAppFile, WindowsAppTar, gzipBytes},
	} {
		t, err := g.tar()
		if err != nil {
			return nil, fmt.Errorf("generating %s: %w", g.name, err)
		}
		if out[g.name], err = g.compress(t); err != nil {
			return nil, fmt.Errorf("generating %s: %w", g.name, err)
		}
	}
	return out, nil
}

// WriteInputs writes files into dir (created if needed) and returns their names.
func WriteInputs(dir string, files map[string][]byte) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	names := make([]string, 0, len(files))
	for name, b := range files {
		if strings.Contains(name, "..") || filepath.IsAbs(name) {
			return nil, fmt.Errorf("writing input %q: name must stay inside %s", name, dir)
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("writing input %q: %w", name, err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, fmt.Errorf("writing input %q: %w", name, err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}
