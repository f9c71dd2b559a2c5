package layer

import (
	"archive/tar"
	"errors"
	"path"
	"strings"
)

// root is the cleaned path of the layer root ("./", "/", ".").
const root = "."

// Whiteout names (OCI image spec, layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Windows layer roots.
const (
	windowsFiles = "Files"
	windowsHives = "Hives"
)

// cleanPath returns name relative to the layer root in canonical form:
// no leading "/" or "./", no "." or ".." elements, no trailing "/". The root
// itself is ".". In Windows mode a backslash is a separator too, so that
// `..\Hives\x` cannot slip past the escape check.
func cleanPath(name string, windows bool) (string, error) {
	if name == "" {
		return "", errors.New("empty path")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("NUL byte in path")
	}
	if windows {
		name = strings.ReplaceAll(name, `\`, "/")
	}
	p := strings.TrimLeft(name, "/")
	if p == "" {
		return root, nil
	}
	if p != name {
		// GNU tar strips a leading "/" when it creates an archive; one that
		// kept it was made on purpose (tar -P) or by a broken writer, and
		// extractors disagree on what it means. Refuse rather than guess.
		return "", errors.New("absolute path; entries must be relative to the layer root (create the tarball with tar -C dir .)")
	}
	p = path.Clean(p)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", errors.New("path escapes the layer root")
	}
	return p, nil
}

// windowsPath maps a cleaned path into the Windows layer shape: paths
// already under Files/ or Hives/ stay (so an already-shaped layer is not
// prefixed twice), everything else goes under Files/. The decision is per
// entry because the stream cannot be looked ahead; a tree whose own top
// directory is called Files is therefore taken as already shaped.
func windowsPath(p string) (mapped string, prefixed bool) {
	if p == root || isWindowsRoot(p) ||
		strings.HasPrefix(p, windowsFiles+"/") || strings.HasPrefix(p, windowsHives+"/") {
		return p, false
	}
	return windowsFiles + "/" + p, true
}

func isWindowsRoot(p string) bool { return p == windowsFiles || p == windowsHives }

// parents calls fn for each proper ancestor of the cleaned path p, outermost
// first, stopping at the first error.
func parents(p string, fn func(parent string) error) error {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			if err := fn(p[:i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkWhiteout validates an entry whose base name starts with ".wh.".
// Whiteouts are empty regular files; ".wh..wh..opq" marks its directory
// opaque and so must be inside one; other ".wh..wh." names are aufs
// bookkeeping that no OCI runtime understands.
func checkWhiteout(p string, hdr *tar.Header) error {
	base := path.Base(p)
	if !strings.HasPrefix(base, whiteoutPrefix) {
		return nil
	}
	if !isRegular(hdr.Typeflag) || hdr.Size != 0 {
		return errors.New("whiteout must be an empty regular file")
	}
	switch {
	case base == whiteoutPrefix:
		return errors.New("whiteout names no file")
	case base == whiteoutOpaque:
		if path.Dir(p) == root {
			return errors.New("opaque whiteout must be inside a directory, not at the layer root")
		}
	case strings.HasPrefix(base, whiteoutMeta):
		return errors.New("unknown whiteout meta entry (only .wh..wh..opq is defined)")
	}
	return nil
}

func isWhiteout(p string) bool { return strings.HasPrefix(path.Base(p), whiteoutPrefix) }

func isRegular(t byte) bool { return t == tar.TypeReg || t == tar.TypeRegA || t == tar.TypeCont }

// isHeaderOnly mirrors archive/tar: these types never have a body, whatever
// their size field says.
func isHeaderOnly(t byte) bool {
	switch t {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return true
	}
	return false
}

// isSparse reports GNU (old format) and PAX sparse files.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
