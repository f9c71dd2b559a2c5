package layer

import (
	"archive/tar"
	"errors"
	"fmt"
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
	// The target is joined to the directory by the runtime: ".wh.." would
	// delete the directory itself, ".wh..." its parent (above the rootfs
	// at the layer root).
	if target := base[len(whiteoutPrefix):]; target == "." || target == ".." {
		return fmt.Errorf("whiteout target %q is not a file name", target)
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

// checkType accepts the entry types OCI runtimes unpack. The PAX and GNU
// pseudo-headers ('x', 'g', 'L', 'K') never get here: archive/tar consumes
// them (and parseRaw checks them). Everything else (GNU 'D' dumpdirs, 'M'
// multi-volume parts, 'V' volume labels, 'N' old long names, Solaris 'X',
// vendor letters) is read by some readers as a regular file and by others
// as something else, or not at all.
func checkType(t byte) error {
	switch t {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeLink, tar.TypeSymlink,
		tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return nil
	}
	return fmt.Errorf("unsupported entry type %q (want a regular file, hardlink, symlink, character or block device, directory or fifo)", t)
}

// typeName names an entry type in messages.
func typeName(t byte) string {
	switch t {
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	}
	return "regular file"
}

// Linux limits on what an unpacker can create.
const (
	maxPathBytes      = 4096 // PATH_MAX
	maxComponentBytes = 255  // NAME_MAX
)

// checkName applies the length limits, and for Windows layers the Windows
// file name rules, to the cleaned path p. It is linear in len(p) and runs
// before any bookkeeping of p.
func checkName(p string, windows bool) error {
	if p == root {
		return nil
	}
	if len(p) > maxPathBytes {
		return fmt.Errorf("path is %d bytes, longer than %d (PATH_MAX)", len(p), maxPathBytes)
	}
	if windows && isDriveLetter(p) {
		return fmt.Errorf("drive letter %q in path; entries must be relative to the layer root", p[:2])
	}
	for rest := p; rest != ""; {
		c, tail, _ := strings.Cut(rest, "/")
		if len(c) > maxComponentBytes {
			return fmt.Errorf("path component %q is %d bytes, longer than %d (NAME_MAX)", truncate(c, 40), len(c), maxComponentBytes)
		}
		if windows {
			if err := checkWindowsComponent(c); err != nil {
				return err
			}
		}
		rest = tail
	}
	return nil
}

func isDriveLetter(p string) bool {
	return len(p) >= 2 && p[1] == ':' && ('a' <= p[0]|0x20 && p[0]|0x20 <= 'z')
}

// checkWindowsComponent rejects names Windows cannot hold as they are:
// characters Win32 forbids (':' also selects an NTFS alternate data stream,
// "readme.txt:evil.exe"), reserved device names, and trailing dots and
// spaces, which Windows strips, so that "a." and "a" would be one file and
// slip past the duplicate check.
func checkWindowsComponent(c string) error {
	for i := 0; i < len(c); i++ {
		switch b := c[i]; {
		case b < 0x20:
			return fmt.Errorf("control character %q in path component %q is not allowed in a Windows file name", b, truncate(c, 40))
		case strings.IndexByte(`:*?<>|"`, b) >= 0:
			return fmt.Errorf("character %q in path component %q is not allowed in a Windows file name", b, truncate(c, 40))
		}
	}
	if last := c[len(c)-1]; last == '.' || last == ' ' {
		return fmt.Errorf("path component %q ends with %q, which Windows strips", truncate(c, 40), last)
	}
	if isReservedWindowsName(c) {
		return fmt.Errorf("path component %q is a reserved Windows device name", truncate(c, 40))
	}
	return nil
}

// isReservedWindowsName reports DOS device names, which open the device
// whatever the extension ("NUL.txt", "com1.log"); case does not matter.
// Windows also ignores spaces before the extension ("CON .txt").
func isReservedWindowsName(c string) bool {
	stem, _, _ := strings.Cut(c, ".")
	stem = strings.ToUpper(strings.TrimRight(stem, " "))
	switch stem {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	if len(stem) < 4 || (stem[:3] != "COM" && stem[:3] != "LPT") {
		return false
	}
	switch stem[3:] {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³":
		return true
	}
	return false
}

// pathTree records what each path of the layer is, one node per path
// component, so that looking a path up hashes each component once: linear
// in the path length, where a map of whole paths hashes every prefix
// (quadratic in the depth). Every node's ancestors are directories:
// nothing is recorded below anything else.
type pathTree struct {
	nodes []pathInfo // nodes[treeRoot] is the layer root
	edges map[pathEdge]int32
	last  pathChain
}

type pathEdge struct {
	parent int32
	name   string // the component's key (see normalizer.key)
}

const treeRoot int32 = 0

// pathChain is the node chain of the last path resolved. Tar writers emit
// a tree in order, so most paths share all their parents with the one
// before: those are found by comparing bytes, without hashing.
type pathChain struct {
	path string
	ends []int   // end offset in path of each component
	ids  []int32 // node of each component
}

func newPathTree() *pathTree {
	return &pathTree{nodes: []pathInfo{{kind: kindImplicit}}, edges: map[pathEdge]int32{}}
}

// resolve finds the deepest node on the cleaned path p and how many bytes
// of p (whole components) it covers: len(p) when p itself is recorded.
func (t *pathTree) resolve(p string, key func(string) string) (id int32, covered int) {
	if p == root {
		return treeRoot, len(p)
	}
	c := &t.last
	k := c.shared(p)
	c.path, c.ends, c.ids = p, c.ends[:k], c.ids[:k]
	id, start := treeRoot, 0
	if k > 0 {
		id, covered, start = c.ids[k-1], c.ends[k-1], c.ends[k-1]+1
	}
	for start <= len(p) {
		end := nextSlash(p, start)
		next, ok := t.edges[pathEdge{id, key(p[start:end])}]
		if !ok {
			return id, covered
		}
		id, covered = next, end
		c.ends, c.ids = append(c.ends, end), append(c.ids, id)
		start = end + 1
	}
	return id, covered
}

// add records p, whose first covered bytes resolve found at node id, with
// its missing parents as implicit directories of info's entry.
func (t *pathTree) add(p string, id int32, covered int, key func(string) string, info pathInfo) {
	start := 0
	if covered > 0 {
		start = covered + 1
	}
	c := &t.last
	extend := c.path == p // resolve(p) left the chain at id
	for start <= len(p) {
		end := nextSlash(p, start)
		next := int32(len(t.nodes))
		t.nodes = append(t.nodes, pathInfo{entry: info.entry, kind: kindImplicit})
		t.edges[pathEdge{id, key(p[start:end])}] = next
		id, start = next, end+1
		if extend {
			c.ends, c.ids = append(c.ends, end), append(c.ids, id)
		}
	}
	t.nodes[id] = info
}

// shared is how many leading components p has in common with the chain.
func (c *pathChain) shared(p string) int {
	l := 0
	for l < len(p) && l < len(c.path) && p[l] == c.path[l] {
		l++
	}
	k := 0
	for k < len(c.ends) && c.ends[k] <= l && (c.ends[k] == len(p) || p[c.ends[k]] == '/') {
		k++
	}
	return k
}

func nextSlash(p string, start int) int {
	if i := strings.IndexByte(p[start:], '/'); i >= 0 {
		return start + i
	}
	return len(p)
}
