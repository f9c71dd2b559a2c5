package layer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/iox"
)

const (
	blockSize  = 512
	ioBuffer   = 256 << 10
	trailerLen = 2 * blockSize
)

// errChanged stops a stopOnChange pass at the first changed byte.
var errChanged = errors.New("layer: normalization changes the input")

var zeroBlock [blockSize]byte

// pathKind is what an earlier entry made of a path.
type pathKind uint8

const (
	kindDir pathKind = iota
	kindSymlink
	kindOther // regular files, hardlinks, devices, fifos
	kindWhiteout
	kindImplicit // a directory only as the parent of later paths
)

type pathInfo struct {
	entry int // 0 for the Files/Hives directories Windows shaping adds
	kind  pathKind
}

func (k pathKind) isDir() bool { return k == kindDir || k == kindImplicit }

// Normalize copies the tar stream src to dst, checking every entry and
// rewriting only what must change (see the package doc). Memory is bounded by
// one header plus one set entry per path; entry bodies are streamed.
//
// Errors for bad input are permanent failures (InvalidLayer, LimitExceeded)
// naming the entry; errors of src are returned wrapped, keeping their own
// classification. On error dst has received a prefix of the output.
func Normalize(dst io.Writer, src io.Reader, opts Options) (Stats, error) {
	if err := opts.validate(); err != nil {
		return Stats{}, failure.Permanent(failure.InvalidSpec, err)
	}
	if opts.Files != nil {
		opts.Files.reset()
	}
	n := newNormalizer(dst, src, opts)
	n.startHashing()
	err := n.run()
	n.stopHashing()
	if ferr := n.out.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("writing normalized layer: %w", ferr)
	}
	n.stats.Size = n.outN.Count()
	return n.stats, err
}

type normalizer struct {
	opts    Options
	lim     Limits
	in      *LimitReader
	br      *bufio.Reader
	rec     recorder
	outN    *iox.Writer
	out     *bufio.Writer
	paths   *pathTree
	stats   Stats
	entry   int // number of headers read so far (1-based in messages)
	implied int // directories in paths that no entry has written (yet)
	enc     bytes.Buffer
	copyBuf []byte
	file    fileHash // the regular file being copied, for Options.Files

	filesDone, hivesDone bool // Windows roots written
}

func newNormalizer(dst io.Writer, src io.Reader, opts Options) *normalizer {
	lim := opts.Limits.WithDefaults()
	in := NewLimitReader(src, lim, opts.CompressedBytes, opts.LayerName)
	br := bufio.NewReaderSize(in, ioBuffer)
	cw := iox.NewWriter(dst)
	n := &normalizer{
		opts:  opts,
		lim:   lim,
		in:    in,
		br:    br,
		outN:  cw,
		out:   bufio.NewWriterSize(cw, ioBuffer),
		paths: newPathTree(),
	}
	n.rec.r = br
	return n
}

func (n *normalizer) run() error {
	for {
		hdr, err := n.next()
		if err == io.EOF {
			return n.finish()
		}
		if err != nil {
			return err
		}
		if err := n.processEntry(hdr); err != nil {
			return err
		}
		if n.stats.Changed && n.opts.stopOnChange {
			return errChanged
		}
	}
}

// next parses the next header with archive/tar while the recorder keeps its
// raw bytes (including PAX and GNU long-name blocks). A fresh tar.Reader per
// entry reads exactly the header blocks and never the body, which this
// package copies itself so that bodies are never re-encoded.
func (n *normalizer) next() (*tar.Header, error) {
	n.rec.reset(n.lim.MaxHeaderBytes)
	hdr, err := tar.NewReader(&n.rec).Next()
	if errors.Is(err, tar.ErrInsecurePath) {
		err = nil // our own path checks are stricter and say why
	}
	if err == nil && hdr.Typeflag == tar.TypeXGlobalHeader {
		// archive/tar leaves the padding after a global header's records
		// for the next Next; take it now so the raw bytes are whole.
		if pad := padding(int64(len(n.rec.buf))); pad > 0 {
			var b [blockSize]byte
			_, err = io.ReadFull(&n.rec, b[:pad])
		}
	}
	if err == nil || err == io.EOF {
		return hdr, err
	}
	return nil, n.headerError(err)
}

func (n *normalizer) headerError(err error) error {
	idx := n.entry + 1
	var fe *failure.Error
	switch {
	case n.in.Err() != nil:
		return n.sourceError()
	case errors.Is(err, errHeaderLimit) || errors.Is(err, tar.ErrFieldTooLong):
		return failure.Permanent(failure.LimitExceeded, n.named(fmt.Errorf(
			"entry %d: header is larger than %d bytes (limit MaxHeaderBytes)", idx, n.lim.MaxHeaderBytes)))
	case errors.As(err, &fe):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return n.invalid("entry %d: truncated tar header", idx)
	}
	return n.invalid("entry %d: invalid tar header: %v", idx, err)
}

// named names the layer in err (see named).
func (n *normalizer) named(err error) error { return named(n.opts.LayerName, err) }

func (n *normalizer) invalid(format string, args ...any) error {
	return failure.Permanent(failure.InvalidLayer, n.named(fmt.Errorf(format, args...)))
}

func (n *normalizer) entryError(name, format string, args ...any) error {
	return n.invalid("entry %d %q: "+format, append([]any{n.entry, truncate(name, 256)}, args...)...)
}

// checkRaw rejects an entry whose raw header blocks (kept byte for byte in
// minimal mode) can be read as another name than the one archive/tar read;
// see rawheader.go.
func (n *normalizer) checkRaw(raw []byte, hdr *tar.Header) error {
	e, err := parseRaw(raw)
	if err == nil {
		err = checkRawNames(e, hdr)
	}
	if err != nil {
		return n.entryError(hdr.Name, "%v", err)
	}
	return nil
}

// processEntry checks one entry and writes it (raw, rewritten, or not at all).
func (n *normalizer) processEntry(hdr *tar.Header) error {
	n.entry++
	if n.lim.MaxEntries >= 0 && n.entry > n.lim.MaxEntries {
		return failure.Permanent(failure.LimitExceeded, n.named(fmt.Errorf(
			"layer has more than %d entries (limit MaxEntries)", n.lim.MaxEntries)))
	}
	raw := n.rec.buf
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return n.globalHeader(raw, hdr)
	}
	if isSparse(hdr) {
		return n.entryError(hdr.Name, "sparse files are not supported")
	}
	if err := checkType(hdr.Typeflag); err != nil {
		return n.entryError(hdr.Name, "%v", err)
	}
	if err := n.checkRaw(raw, hdr); err != nil {
		return err
	}
	p, err := n.checkEntry(hdr)
	if err != nil {
		return err
	}
	size := dataSize(hdr)
	if p == "" { // dropped: root entry or merged directory
		n.stats.Changed = true
		return n.skipBody(size)
	}
	if n.opts.Windows && !isWindowsRoot(p) {
		if err := n.windowsRoots(); err != nil {
			return err
		}
	}
	want, err := n.rewrite(hdr, p)
	if err != nil {
		return err
	}
	n.beginFile(p, hdr.Typeflag)
	if err := n.emit(raw, want, size); err != nil {
		return err
	}
	n.endFile(p, size)
	return nil
}

// checkEntry applies the safety rules and records the entry's path. It
// returns the cleaned (and, for Windows, mapped) path, or "" when the entry
// is to be dropped.
func (n *normalizer) checkEntry(hdr *tar.Header) (string, error) {
	p, err := cleanPath(hdr.Name, n.opts.Windows)
	if err != nil {
		return "", n.entryError(hdr.Name, "%v", err)
	}
	if p == root {
		return n.rootEntry(hdr)
	}
	// Limits first: everything after this is linear in len(p), and p is
	// now at most maxPathBytes long.
	if err := checkName(p, n.opts.Windows); err != nil {
		return "", n.entryError(hdr.Name, "%v", err)
	}
	if hdr.Typeflag == tar.TypeSymlink && len(hdr.Linkname) > maxPathBytes {
		return "", n.entryError(hdr.Name, "symlink target is %d bytes, longer than %d (PATH_MAX)", len(hdr.Linkname), maxPathBytes)
	}
	if n.opts.Windows {
		var prefixed bool
		if p, prefixed = windowsPath(p); prefixed {
			n.stats.count(ChangeWindowsPrefixed, 1)
		}
	}
	if err := n.checkParents(hdr.Name, p); err != nil {
		return "", err
	}
	if err := checkWhiteout(p, hdr); err != nil {
		return "", n.entryError(hdr.Name, "%v", err)
	}
	if hdr.Typeflag == tar.TypeLink {
		if err := n.checkHardlink(hdr); err != nil {
			return "", err
		}
	}
	return n.record(hdr, p)
}

func (n *normalizer) rootEntry(hdr *tar.Header) (string, error) {
	if hdr.Typeflag != tar.TypeDir {
		return "", n.entryError(hdr.Name, "the layer root must be a directory, found type %q", hdr.Typeflag)
	}
	if n.opts.reproducible() || n.opts.Windows {
		n.stats.count(ChangeDroppedRootEntries, 1)
		return "", nil
	}
	return n.record(hdr, root)
}

// key is the identity of a path component: Windows file systems are
// case-insensitive, so there "A.txt" and "a.txt" are one file.
func (n *normalizer) key(c string) string {
	if n.opts.Windows {
		return strings.ToLower(c)
	}
	return c
}

// checkParents rejects p when its deepest recorded ancestor is not a
// directory. Nothing is ever recorded below a non-directory, so that
// ancestor is the only one to look at.
func (n *normalizer) checkParents(name, p string) error {
	id, covered := n.paths.resolve(p, n.key)
	info := n.paths.nodes[id]
	switch {
	case covered == len(p) || info.kind.isDir():
		return nil
	case info.kind == kindSymlink:
		return n.entryError(name, "path goes through symlink %q (entry %d)", p[:covered], info.entry)
	default:
		return n.entryError(name, "parent %q is not a directory (entry %d)", p[:covered], info.entry)
	}
}

func (n *normalizer) checkHardlink(hdr *tar.Header) error {
	t, err := cleanPath(hdr.Linkname, n.opts.Windows)
	if err == nil {
		err = checkName(t, n.opts.Windows)
	}
	if err != nil {
		return n.entryError(hdr.Name, "hardlink target %q: %v", truncate(hdr.Linkname, 256), err)
	}
	if n.opts.Windows {
		t, _ = windowsPath(t)
	}
	id, covered := n.paths.resolve(t, n.key)
	info := n.paths.nodes[id]
	switch {
	case covered < len(t) || info.kind == kindWhiteout:
		return n.entryError(hdr.Name, "hardlink target %q is not an earlier entry of this layer", hdr.Linkname)
	case info.kind.isDir():
		return n.entryError(hdr.Name, "hardlink target %q is a directory", hdr.Linkname)
	}
	return nil
}

// record remembers p, merging a repeated directory (returns "") and
// rejecting any other repeat. A path that is so far only the parent of
// earlier entries may become an explicit directory, nothing else: a file
// there would replace the directory and lose what is in it.
func (n *normalizer) record(hdr *tar.Header, p string) (string, error) {
	kind := kindOf(hdr, p)
	id, covered := n.paths.resolve(p, n.key)
	if covered == len(p) {
		prev := n.paths.nodes[id]
		switch {
		case prev.kind == kindImplicit && kind == kindDir:
			n.paths.nodes[id] = pathInfo{entry: n.entry, kind: kind}
			if id != treeRoot {
				n.implied--
			}
			return p, nil
		case prev.kind == kindImplicit:
			return "", n.entryError(hdr.Name, "%q is a directory (parent of entry %d) and cannot be replaced by a %s",
				p, prev.entry, typeName(hdr.Typeflag))
		case prev.kind == kindDir && kind == kindDir:
			n.stats.count(ChangeMergedDirectories, 1)
			return "", nil
		}
		first := fmt.Sprintf("entry %d", prev.entry)
		if prev.entry == 0 {
			first = "the Windows layer shape"
		}
		return "", n.entryError(hdr.Name, "duplicate path %q, already written by %s", p, first)
	}
	before := len(n.paths.nodes)
	n.paths.add(p, id, covered, n.key, pathInfo{entry: n.entry, kind: kind})
	// Every node costs memory: one deep name implies up to 2048 parent
	// directories, so they count against MaxEntries with the entries.
	n.implied += len(n.paths.nodes) - before - 1
	if n.lim.MaxEntries >= 0 && n.entry+n.implied > n.lim.MaxEntries {
		return "", failure.Permanent(failure.LimitExceeded, n.named(fmt.Errorf(
			"layer has more than %d entries, counting the %d parent directories implied by entries (limit MaxEntries)",
			n.lim.MaxEntries, n.implied)))
	}
	return p, nil
}

func kindOf(hdr *tar.Header, p string) pathKind {
	switch {
	case hdr.Typeflag == tar.TypeDir:
		return kindDir
	case hdr.Typeflag == tar.TypeSymlink:
		return kindSymlink
	case isWhiteout(p):
		return kindWhiteout
	}
	return kindOther
}

// globalHeader passes a global PAX header through (minimal) or drops it
// (reproducible). archive/tar applies none of its records to later
// entries, every other reader applies them all: one that sets a header
// field (a name, a size that moves where the next header starts, an owner)
// or sparse data is rejected, see the package doc.
func (n *normalizer) globalHeader(raw []byte, hdr *tar.Header) error {
	if _, err := parseRaw(raw); err != nil {
		return n.entryError(hdr.Name, "%v", err)
	}
	for _, k := range headerFieldList {
		if _, ok := hdr.PAXRecords[k]; ok {
			return n.entryError(hdr.Name, "global PAX header sets %q for later entries", k)
		}
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return n.entryError(hdr.Name, "global PAX header sets %q for later entries", k)
		}
	}
	if n.opts.reproducible() {
		n.stats.count(ChangeDroppedGlobal, 1)
		n.stats.Changed = true
		return nil
	}
	return n.write(raw)
}

// dataSize is the number of body bytes that follow the header.
func dataSize(hdr *tar.Header) int64 {
	if isHeaderOnly(hdr.Typeflag) {
		return 0
	}
	return hdr.Size
}

func padding(size int64) int64 { return -size & (blockSize - 1) }

// emit writes the entry: the raw header blocks and body padding when want
// is nil or encodes to the same bytes, else the re-encoded header and zero
// padding. The body itself is always copied unchanged.
func (n *normalizer) emit(raw []byte, want *tar.Header, size int64) error {
	header, isRaw := raw, true
	if want != nil {
		enc, err := n.encode(want)
		if err != nil {
			return err
		}
		if !bytes.Equal(enc, raw) {
			header, isRaw = enc, false
			n.stats.count(ChangeRewrittenHeaders, 1)
			n.stats.Changed = true
		}
	}
	n.stats.Entries++
	if err := n.write(header); err != nil {
		return err
	}
	if err := n.copyBody(size); err != nil {
		return err
	}
	return n.copyPadding(size, isRaw)
}

// encode renders h's header blocks. It keeps h.Format when it can express
// h (minimal mode keeps the input's format) and falls back to PAX.
func (n *normalizer) encode(h *tar.Header) ([]byte, error) {
	var err error
	for _, f := range []tar.Format{h.Format, tar.FormatPAX, tar.FormatUnknown} {
		n.enc.Reset()
		h.Format = f
		if err = tar.NewWriter(&n.enc).WriteHeader(h); err == nil {
			return n.enc.Bytes(), nil
		}
	}
	return nil, n.entryError(h.Name, "cannot encode header: %v", err)
}

func (n *normalizer) write(b []byte) error {
	if _, err := n.out.Write(b); err != nil {
		return fmt.Errorf("writing normalized layer: %w", err)
	}
	return nil
}

func (n *normalizer) copyBody(size int64) error {
	if n.copyBuf == nil {
		n.copyBuf = make([]byte, ioBuffer)
	}
	for size > 0 {
		chunk := n.copyBuf[:min(size, int64(len(n.copyBuf)))]
		m, err := io.ReadFull(n.br, chunk)
		if err != nil {
			return n.bodyError(err)
		}
		if err := n.write(chunk[:m]); err != nil {
			return err
		}
		n.hashBody(chunk[:m])
		size -= int64(m)
	}
	return nil
}

// copyPadding copies the padding after a body: raw when the header was raw
// (so that junk in padding of an untouched entry is kept byte for byte),
// zeros otherwise.
func (n *normalizer) copyPadding(size int64, raw bool) error {
	pad := padding(size)
	if pad == 0 {
		return nil
	}
	var b [blockSize]byte
	if _, err := io.ReadFull(n.br, b[:pad]); err != nil {
		return n.bodyError(err)
	}
	if !raw {
		if !isZero(b[:pad]) {
			n.stats.Changed = true
		}
		b = zeroBlock
	}
	return n.write(b[:pad])
}

func (n *normalizer) skipBody(size int64) error {
	if _, err := n.br.Discard(int(min(size+padding(size), 1<<62))); err != nil {
		return n.bodyError(err)
	}
	return nil
}

func (n *normalizer) bodyError(err error) error {
	var fe *failure.Error
	switch {
	case n.in.Err() != nil:
		return n.sourceError()
	case errors.As(err, &fe):
		return err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return n.invalid("entry %d: truncated: the layer ends inside the entry's content", n.entry)
	}
	return n.named(fmt.Errorf("entry %d: reading content: %w", n.entry, err))
}

func isZero(b []byte) bool {
	for len(b) >= blockSize {
		if !bytes.Equal(b[:blockSize], zeroBlock[:]) {
			return false
		}
		b = b[blockSize:]
	}
	return bytes.Equal(b, zeroBlock[:len(b)])
}
