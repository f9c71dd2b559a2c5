// Package testkit holds the fixtures kiln's tests share: tar and compressed
// layer builders, an in-process registry that counts and injects faults, an
// ETag file server, polling and digests. Only tests and internal/sandbox
// (the demo and e2e fixtures, never linked into bin/kiln) import it;
// TestNotLinkedIntoKiln keeps it out of the shipped binary.
// It imports no kiln package, so any package's internal tests can use it.
package testkit

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"
)

// Time is the mtime of every entry that names none: fixtures are the same
// bytes on every run.
var Time = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Entry is one tar entry. Zero fields take defaults: a regular file, mode
// 0644 (0755 for directories, 0777 for symlinks), mtime Time, the size of
// Body for regular files and 0 otherwise, the format archive/tar picks.
type Entry struct {
	Name string
	Type byte
	Mode int64
	Body string
	Link string
	// Size, when non-zero, is written in the header whatever Body holds.
	Size       int64
	ModTime    time.Time
	AccessTime time.Time
	Uname      string
	PAX        map[string]string
	Format     tar.Format
}

// File is a regular file.
func File(name, body string) Entry { return Entry{Name: name, Type: tar.TypeReg, Body: body} }

// Dir is a directory.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }

// Symlink is a symbolic link to target.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Link: target}
}

// Hardlink is a hard link to the earlier entry target.
func Hardlink(name, target string) Entry { return Entry{Name: name, Type: tar.TypeLink, Link: target} }

// WithMode returns e with permission bits mode.
func (e Entry) WithMode(mode int64) Entry {
	e.Mode = mode
	return e
}

// header is the tar header e stands for, defaults applied.
func (e Entry) header() *tar.Header {
	typ := e.Type
	if typ == 0 {
		typ = tar.TypeReg
	}
	if typ == tar.TypeXGlobalHeader {
		return &tar.Header{Name: e.Name, Typeflag: typ, PAXRecords: e.PAX}
	}
	h := &tar.Header{Name: e.Name, Typeflag: typ, Linkname: e.Link, Mode: e.Mode, Size: e.Size,
		ModTime: e.ModTime, AccessTime: e.AccessTime, Uname: e.Uname, PAXRecords: e.PAX, Format: e.Format}
	if h.Mode == 0 {
		h.Mode = defaultMode(typ)
	}
	if h.ModTime.IsZero() {
		h.ModTime = Time
	}
	if h.Size == 0 && typ == tar.TypeReg {
		h.Size = int64(len(e.Body))
	}
	return h
}

func defaultMode(typ byte) int64 {
	switch typ {
	case tar.TypeDir:
		return 0o755
	case tar.TypeSymlink:
		return 0o777
	}
	return 0o644
}

// WriteTar writes entries as a tar archive to w.
func WriteTar(w io.Writer, entries ...Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if err := tw.WriteHeader(e.header()); err != nil {
			return fmt.Errorf("writing tar entry %q: %w", e.Name, err)
		}
		if _, err := io.WriteString(tw, e.Body); err != nil {
			return fmt.Errorf("writing tar entry %q: %w", e.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("closing tar: %w", err)
	}
	return nil
}

// Tar is the archive of entries.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTar(&buf, entries...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Files is the archive of regular files given as name, content pairs.
func Files(t testing.TB, nameContent ...string) []byte {
	t.Helper()
	if len(nameContent)%2 != 0 {
		t.Fatalf("testkit.Files: %d arguments, want name, content pairs", len(nameContent))
	}
	es := make([]Entry, 0, len(nameContent)/2)
	for i := 0; i < len(nameContent); i += 2 {
		es = append(es, File(nameContent[i], nameContent[i+1]))
	}
	return Tar(t, es...)
}

// ReadEntry is one entry of a tar read back: its header and body.
type ReadEntry struct {
	Header *tar.Header
	Body   []byte
}

// ReadTar reads every entry of the tar stream r, failing t on a bad one.
func ReadTar(t testing.TB, r io.Reader) []ReadEntry {
	t.Helper()
	var out []ReadEntry
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading tar entry %d: %v", len(out), err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading tar entry %s: %v", h.Name, err)
		}
		out = append(out, ReadEntry{h, body})
	}
}
