package sandbox

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ulikunitz/xz"
)

// Names of the generated sample inputs, as the samples' URLs and ConfigMap
// keys name them.
const (
	RootfsFile     = "rootfs.tar.xz"
	AppFile        = "app.tar.gz"
	WindowsAppFile = "windows-app.tar.gz"
)

// inputTime is the mtime of every generated entry: fixed, so the inputs are
// the same bytes on every run and machine.
var inputTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// entry is one tar entry of a generated tree.
type entry struct {
	name     string
	typ      byte
	mode     int64
	body     []byte
	linkname string
}

func dir(name string, mode int64) entry { return entry{name: name, typ: tar.TypeDir, mode: mode} }
func file(name string, mode int64, body []byte) entry {
	return entry{name: name, typ: tar.TypeReg, mode: mode, body: body}
}
func symlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, mode: 0o777, linkname: target}
}
func hardlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeLink, mode: 0o755, linkname: target}
}

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
func rootfsEntries() []entry {
	es := []entry{
		dir("bin/", 0o755),
		file("bin/busybox", 0o755, pseudoBinary(1, 2<<20)),
		symlink("bin/sh", "busybox"),
		dir("etc/", 0o755),
		file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n")),
		file("etc/hostname", 0o644, []byte("kiln-demo\n")),
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/false\n")),
		dir("home/", 0o755),
		dir("home/nonroot/", 0o700),
		dir("root/", 0o700),
		dir("sbin/", 0o755),
		hardlink("sbin/init", "bin/busybox"),
		dir("tmp/", 0o1777),
		dir("usr/", 0o755),
		dir("usr/bin/", 0o755),
		dir("var/", 0o755),
		dir("var/log/", 0o755),
	}
	for _, a := range busyboxApplets {
		es = append(es, symlink("usr/bin/"+a, "/bin/busybox"))
	}
	return es
}

// appEntries is the application layer: a server binary and its config.
func appEntries() []entry {
	return []entry{
		dir("app/", 0o755),
		dir("app/bin/", 0o755),
		file("app/bin/server", 0o755, pseudoBinary(2, 96<<10)),
		file("app/config.yaml", 0o644, []byte("listen: :8080\nlog:\n  level: info\n")),
	}
}

// windowsAppEntries is what `tar -C dir .` writes for a Windows app: a "./"
// root entry and "./"-prefixed names. crane append turned "./" into a second
// "Files" entry ("duplicate file path: Files"); kiln must shape it.
func windowsAppEntries() []entry {
	return []entry{
		dir("./", 0o755),
		dir("./app/", 0o755),
		file("./app/server.exe", 0o755, append([]byte("MZ\x90\x00"), pseudoBinary(3, 64<<10)...)),
		file("./app/config.json", 0o644, []byte("{\"listen\": \":8080\"}\n")),
	}
}

// writeTar writes entries as a USTAR archive with fixed owners and times.
func writeTar(es []entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		hdr := &tar.Header{
			Typeflag: e.typ, Name: e.name, Linkname: e.linkname, Mode: e.mode,
			Size: int64(len(e.body)), ModTime: inputTime, Format: tar.FormatUSTAR,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing tar entry %q: %w", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("writing tar entry %q: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing tar: %w", err)
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
