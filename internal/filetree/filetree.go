// Package filetree writes a set of files into a deterministic tar stream:
// the layer tarball of a files, configMapDir or secretDir source, before it
// goes through the same normalization and encoding as any other layer.
//
// The same files always give the same bytes, whatever the order they are
// given in, the machine or GOMAXPROCS: entries are sorted by path, every
// parent directory gets its own entry, mtimes are Options.Created, owner
// names are empty, and archive/tar picks USTAR unless a header needs PAX (a
// long path, a uid beyond the octal field).
package filetree

import (
	"archive/tar"
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/failure"
)

// DefaultFileMode and DefaultDirMode apply when neither the entry nor the
// options set a mode.
const (
	DefaultFileMode int64 = 0o644
	DefaultDirMode  int64 = 0o755
)

// File is one file to write.
type File struct {
	// Path is absolute and clean ("/etc/app/app.yaml").
	Path string
	// Ref names the entry in errors ("files[2]", "configMap web key
	// index.html"); never its content.
	Ref  string
	Data []byte
	// Link, when set, makes the entry a symlink to Link (Data is ignored):
	// a sourceRef artifact's symlinks, checked by package artifact.
	Link string
	// Mode, UID and GID are used when set; nil takes Options' defaults.
	Mode     *int64
	UID, GID *int64
}

// Options are the defaults of the files and the directories created.
type Options struct {
	// Layer names the layer in errors.
	Layer string
	// Created is every entry's mtime (truncated to seconds).
	Created time.Time
	// FileMode, DirMode, UID and GID default to 0644, 0755, 0 and 0.
	FileMode, DirMode *int64
	UID, GID          *int64
}

// Tar returns the tar stream of files. A path that is relative, not clean,
// the root, given twice, or both a file and another file's parent is an
// InvalidSpec error naming the layer and the entries.
func Tar(files []File, opts Options) ([]byte, error) {
	sorted, err := check(files, opts.Layer)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(opts.Created.Unix(), 0).UTC()
	dirs := map[string]bool{}
	for _, f := range sorted {
		if err := writeParents(tw, f.Path, dirs, mtime, opts); err != nil {
			return nil, err
		}
		h := &tar.Header{
			Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.Path, "/"), Size: int64(len(f.Data)),
			Mode: or(f.Mode, opts.FileMode, DefaultFileMode), Uid: int(or(f.UID, opts.UID, 0)),
			Gid: int(or(f.GID, opts.GID, 0)), ModTime: mtime,
		}
		if f.Link != "" {
			// A symlink's own mode means nothing on Linux; 0777 is what
			// every tool writes.
			h.Typeflag, h.Linkname, h.Size, h.Mode = tar.TypeSymlink, f.Link, 0, 0o777
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, invalid(opts.Layer, "%s %q: %v", f.Ref, f.Path, err)
		}
		if f.Link != "" {
			continue
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, fmt.Errorf("writing %s: %w", f.Ref, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing the files tarball: %w", err)
	}
	return buf.Bytes(), nil
}

// check validates the paths and returns the files sorted by path.
func check(files []File, layer string) ([]File, error) {
	sorted := make([]File, len(files))
	copy(sorted, files)
	for _, f := range sorted {
		if err := checkPath(f.Path); err != nil {
			return nil, invalid(layer, "%s: path %q %s", f.Ref, f.Path, err)
		}
	}
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	byPath := make(map[string]File, len(sorted))
	for _, f := range sorted {
		if g, ok := byPath[f.Path]; ok {
			return nil, invalid(layer, "%s and %s both write %q", g.Ref, f.Ref, f.Path)
		}
		byPath[f.Path] = f
	}
	for _, f := range sorted {
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if g, ok := byPath[d]; ok {
				return nil, invalid(layer, "%s writes %q, which %s needs as a directory", g.Ref, d, f.Ref)
			}
		}
	}
	return sorted, nil
}

// checkPath says what is wrong with p, or nil.
func checkPath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("must be absolute")
	case p == "/":
		return fmt.Errorf("must name a file, not the root")
	case strings.Contains(p, "\x00"):
		return fmt.Errorf("must not contain NUL")
	case path.Clean(p) != p:
		for _, c := range strings.Split(p, "/") {
			if c == ".." {
				return fmt.Errorf("must not contain \"..\"")
			}
		}
		return fmt.Errorf("must be clean (want %q)", path.Clean(p))
	}
	return nil
}

// writeParents writes the directory entries above p not written yet,
// outermost first. Files are sorted, so a directory always precedes its
// contents.
func writeParents(tw *tar.Writer, p string, done map[string]bool, mtime time.Time, opts Options) error {
	var missing []string
	for d := path.Dir(p); d != "/" && !done[d]; d = path.Dir(d) {
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		done[d] = true
		h := &tar.Header{
			Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/",
			Mode: or(nil, opts.DirMode, DefaultDirMode), Uid: int(or(nil, opts.UID, 0)),
			Gid: int(or(nil, opts.GID, 0)), ModTime: mtime,
		}
		if err := tw.WriteHeader(h); err != nil {
			return invalid(opts.Layer, "directory %q: %v", d, err)
		}
	}
	return nil
}

// or returns the first set value.
func or(v, def *int64, fallback int64) int64 {
	switch {
	case v != nil:
		return *v
	case def != nil:
		return *def
	}
	return fallback
}

func invalid(layer, format string, args ...any) error {
	return failure.Permanent(failure.InvalidSpec, failure.Layerf(layer, format, args...))
}

// ParseMode reads an octal mode string ("0644", "755"); "" is nil.
func ParseMode(s string) (*int64, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) < 3 || len(s) > 5 {
		return nil, fmt.Errorf("mode %q: want 3 or 4 octal digits", s)
	}
	var m int64
	for _, c := range s {
		if c < '0' || c > '7' {
			return nil, fmt.Errorf("mode %q: want octal digits", s)
		}
		m = m*8 + int64(c-'0')
	}
	if m > 0o7777 {
		return nil, fmt.Errorf("mode %q: above 07777", s)
	}
	return &m, nil
}
