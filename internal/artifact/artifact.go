// Package artifact turns the files of a Flux source artifact (the tar.gz
// source-controller serves for a GitRepository, OCIRepository, Bucket or
// ExternalArtifact), or of a local directory standing in for one (`kiln
// build --source NAME=DIR`), into the files of a layer: path selects a
// subdirectory and the files land under targetDir.
//
// Both readers give the same Tree for the same files, so a checkout builds
// the same layer as the artifact of its commit. Nothing read can lead out of
// the artifact: entry names with ".." are refused, path is resolved the way
// securejoin resolves it (a symlink on the way is followed inside the
// artifact, clamped at its root), and a symlink that the layer keeps must
// point inside the selected directory (relative, no way out), since under
// targetDir anything else would name another part of the image.
package artifact

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/filetree"
)

// Limits bound what a Tree holds in memory.
type Limits struct {
	// MaxBytes caps the total size of the files; default DefaultMaxBytes.
	MaxBytes int64
	// MaxEntries caps the number of entries; default DefaultMaxEntries.
	MaxEntries int
}

// Defaults of Limits. An artifact's files are held in memory while the
// layer tarball is written, so the cap is far below a tarball layer's.
const (
	DefaultMaxBytes   int64 = 1 << 30
	DefaultMaxEntries       = 1 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return l
}

// entry is one file, directory or symlink of a Tree.
type entry struct {
	dir  bool
	link string
	mode int64
	data []byte
}

// Tree is the files of an artifact, by clean slash path relative to its
// root ("deploy/base/app.yaml").
type Tree struct {
	entries map[string]*entry
	limits  Limits
	bytes   int64
}

func newTree(l Limits) *Tree {
	return &Tree{entries: map[string]*entry{}, limits: l.withDefaults()}
}

// add records e under name (already clean and relative), later entries
// replacing earlier ones as a tar extractor would.
func (t *Tree) add(name string, e *entry) error {
	if _, ok := t.entries[name]; !ok && len(t.entries) >= t.limits.MaxEntries {
		return failure.Permanentf(failure.LimitExceeded, "the artifact has more than %d entries", t.limits.MaxEntries)
	}
	t.bytes += int64(len(e.data))
	if t.bytes > t.limits.MaxBytes {
		return failure.Permanentf(failure.LimitExceeded, "the artifact's files exceed %d bytes (they are held in memory while the layer is written)", t.limits.MaxBytes)
	}
	t.entries[name] = e
	return nil
}

// ReadTar reads an uncompressed tar stream to its end. Entries other than
// files, directories, symlinks and hard links are refused, as are names
// leading out of the root.
func ReadTar(r io.Reader, l Limits) (*Tree, error) {
	t := newTree(l)
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return t, nil
		}
		if err != nil {
			return nil, invalidOrRead("reading the artifact's tar", err)
		}
		name, err := entryName(h.Name)
		if err != nil {
			return nil, err
		}
		if name == "" {
			continue // the root itself ("./")
		}
		e := &entry{mode: h.Mode & 0o7777}
		switch h.Typeflag {
		case tar.TypeDir:
			e.dir = true
		case tar.TypeSymlink:
			e.link = h.Linkname
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archivers write TypeRegA
			if h.Size > t.limits.MaxBytes-t.bytes {
				return nil, failure.Permanentf(failure.LimitExceeded, "the artifact's files exceed %d bytes (they are held in memory while the layer is written)", t.limits.MaxBytes)
			}
			if e.data, err = io.ReadAll(tr); err != nil {
				return nil, invalidOrRead(fmt.Sprintf("reading artifact entry %q", h.Name), err)
			}
		case tar.TypeLink:
			target, err := entryName(h.Linkname)
			if err != nil {
				return nil, err
			}
			src, ok := t.entries[target]
			if !ok || src.dir || src.link != "" {
				return nil, failure.Permanentf(failure.InvalidLayer, "artifact entry %q is a hard link to %q, which is not a file before it", h.Name, h.Linkname)
			}
			e.data, e.mode = src.data, src.mode
		default:
			return nil, failure.Permanentf(failure.InvalidLayer, "artifact entry %q has tar type %q: an artifact holds files, directories and symlinks", h.Name, h.Typeflag)
		}
		if err := t.add(name, e); err != nil {
			return nil, err
		}
	}
}

// invalidOrRead keeps a classified error (the digest check of the stream
// below, a limit) and calls the rest a broken artifact.
func invalidOrRead(what string, err error) error {
	var fe *failure.Error
	if errors.As(err, &fe) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return failure.Permanent(failure.InvalidLayer, fmt.Errorf("%s: %w", what, err))
}

// entryName cleans a tar name into a relative path ("" for the root), or
// refuses one that leads out.
func entryName(raw string) (string, error) {
	for _, c := range strings.Split(raw, "/") {
		if c == ".." {
			return "", failure.Permanentf(failure.InvalidLayer, "artifact entry %q leads out of the artifact", raw)
		}
	}
	n := strings.TrimPrefix(path.Clean("/"+raw), "/")
	return n, nil
}

// ReadDir reads a local directory the way source-controller would archive
// it: files, directories and symlinks, modes as on disk. .git directories
// are left out (source-controller leaves them out of Git artifacts).
func ReadDir(dir string, l Limits) (*Tree, error) {
	t := newTree(l)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := &entry{mode: int64(info.Mode().Perm())}
		switch m := info.Mode(); {
		case m.IsDir():
			e.dir = true
		case m&fs.ModeSymlink != 0:
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
		case m.IsRegular():
			if info.Size() > t.limits.MaxBytes-t.bytes {
				return failure.Permanentf(failure.LimitExceeded, "the directory's files exceed %d bytes (they are held in memory while the layer is written)", t.limits.MaxBytes)
			}
			if e.data, err = os.ReadFile(p); err != nil {
				return err
			}
		default:
			return failure.Permanentf(failure.InvalidLayer, "%s is a %s: a source directory holds files, directories and symlinks", p, m.Type())
		}
		return t.add(filepath.ToSlash(rel), e)
	})
	if err != nil {
		var fe *failure.Error
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, failure.Permanent(failure.SourceNotFound, fmt.Errorf("reading source directory: %w", err))
	}
	return t, nil
}

// maxLinks bounds the symlinks followed while resolving path, as the
// kernel's ELOOP does.
const maxLinks = 255

// resolve returns the entry path sub names, following symlinks inside the
// tree: ".." and absolute targets are clamped at the root (securejoin
// semantics), so no path resolves outside it.
func (t *Tree) resolve(sub string) (string, error) {
	todo := strings.Split(strings.TrimPrefix(path.Clean("/"+sub), "/"), "/")
	cur, links := "", 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = parent(cur)
			continue
		}
		next := path.Join(cur, c)
		e, ok := t.entries[next]
		if !ok || e.link == "" {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", failure.Permanentf(failure.InvalidLayer, "path %q: more than %d symlinks on the way", sub, maxLinks)
		}
		if strings.HasPrefix(e.link, "/") {
			cur = "" // absolute: from the artifact's root
		}
		todo = append(strings.Split(e.link, "/"), todo...)
	}
	return cur, nil
}

func parent(p string) string {
	if d := path.Dir(p); d != "." {
		return d
	}
	return ""
}

// Files returns the files under sub (a subdirectory of the tree, "" for
// all) placed under targetDir (absolute, default "/"), with the modes they
// have in the tree: the layer's overrides make them readable. Errors name
// the layer.
func (t *Tree) Files(layer, sub, targetDir string) ([]filetree.File, error) {
	if targetDir == "" {
		targetDir = "/"
	}
	if !strings.HasPrefix(targetDir, "/") || path.Clean(targetDir) != targetDir {
		return nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(layer, "targetDir %q must be absolute and clean (want %q)", targetDir, path.Clean("/"+targetDir)))
	}
	root, err := t.resolve(sub)
	if err != nil {
		return nil, failure.InLayer(layer, err)
	}
	if e, ok := t.entries[root]; root != "" && (!ok || !e.dir) {
		if !ok && !t.hasUnder(root) {
			return nil, failure.InLayer(layer, failure.Permanentf(failure.SourceNotFound, "path %q is not in the artifact", sub))
		}
		if ok {
			return nil, failure.Permanent(failure.InvalidSpec, failure.Layerf(layer, "path %q is a file of the artifact, not a directory", sub))
		}
	}
	names := make([]string, 0, len(t.entries))
	for n := range t.entries {
		if rel, ok := under(root, n); ok && rel != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var out []filetree.File
	for _, n := range names {
		e := t.entries[n]
		if e.dir {
			continue // implied by the files; filetree writes parents with dirMode
		}
		rel, _ := under(root, n)
		f := filetree.File{Path: path.Join(targetDir, rel), Ref: fmt.Sprintf("artifact entry %q", n), Data: e.data, Mode: &e.mode}
		if e.link != "" {
			if err := linkInside(root, n, e.link); err != nil {
				return nil, failure.InLayer(layer, err)
			}
			f.Link, f.Data = e.link, nil
		}
		out = append(out, f)
	}
	return out, nil
}

// hasUnder reports whether some entry lies below dir (a directory only
// implied by its files).
func (t *Tree) hasUnder(dir string) bool {
	for n := range t.entries {
		if strings.HasPrefix(n, dir+"/") {
			return true
		}
	}
	return false
}

// under returns n relative to root when n is root or below it.
func under(root, n string) (string, bool) {
	switch {
	case root == "":
		return n, true
	case n == root:
		return "", true
	case strings.HasPrefix(n, root+"/"):
		return n[len(root)+1:], true
	}
	return "", false
}

// linkInside refuses a symlink the layer cannot keep: an absolute target
// (it would name the image's root, not the artifact's), or a relative one
// leading out of the selected directory, counted without clamping: under
// targetDir, a ".." beyond it names another part of the image.
func linkInside(root, name, target string) error {
	if strings.HasPrefix(target, "/") {
		return failure.Permanentf(failure.InvalidLayer, "artifact symlink %q points to the absolute path %q: only relative symlinks inside the layer's path are kept", name, target)
	}
	rel, _ := under(root, name)
	var stack []string
	if d := path.Dir(rel); d != "." {
		stack = strings.Split(d, "/")
	}
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(stack) == 0 {
				return failure.Permanentf(failure.InvalidLayer, "artifact symlink %q -> %q leads out of the layer's path %q", name, target, "/"+root)
			}
			stack = stack[:len(stack)-1]
		default:
			stack = append(stack, c)
		}
	}
	return nil
}
