// Package layer turns a fetched layer tarball into a verified, content-addressed
// OCI layer blob in one streaming pass.
//
// Normalize is the tar-to-tar pass: it checks every entry (escapes, links,
// duplicates, whiteouts, limits) and rewrites only the bytes that must change,
// so that a clean input comes out byte for byte identical and its original
// compressed bytes can be pushed untouched (the fast path of Build).
//
// Decisions worth knowing (each one is tested):
//   - Paths are compared after cleaning: "./a", "a" and "a/" are the same
//     path. An absolute name ("/etc/x", also as a hardlink target) is
//     rejected: GNU tar strips the "/" when creating archives, extractors
//     disagree on what it means, and a bad-input report beats a guess.
//   - A path that cleans to something outside the root ("..", "../x",
//     "a/../../x", "/../x") is rejected; "./a/../b" is fine.
//   - Two directory entries for one path are merged by keeping the first one
//     and dropping the later ones: the first has already been streamed out,
//     and holding entries back would break the one-pass, bounded-memory
//     design. Any other pair of entries for one path is an error.
//   - Sparse files (GNU or PAX sparse) are rejected: no layer writer in use
//     produces them and their raw bytes differ from their content.
//   - Global PAX headers are passed through in minimal mode unless they set
//     a header field (path, linkpath, size, uid, gid, uname, gname, mtime,
//     atime, ctime) or sparse data: GNU tar, libarchive and Python apply them
//     to every later entry and archive/tar does not, a differential that
//     could smuggle a path, an owner or a different entry boundary past the
//     checks. They are dropped in reproducible mode.
//   - Raw headers must read the same in every mainstream reader, in every
//     mode: no PAX path together with a different GNU long name (or
//     linkpath and long link), no second 'x', 'L' or 'K' header before one
//     entry, none of them before a global header, no NUL inside a long
//     name, no empty PAX record for a header field, no data in the prefix
//     field of a non-ustar header. rawheader.go lists which reader reads
//     what.
//   - Entry types: regular files ('0', '\x00', '7'), hardlinks, symlinks,
//     character and block devices, directories and fifos. Anything else
//     ('D', 'M', 'N', 'V', 'X', vendor letters, sparse 'S') is rejected.
//   - A whiteout must name a file: ".wh.", ".wh.." and ".wh..." are rejected
//     (unpacked, the last two delete the directory or its parent);
//     ".wh..wh..opq" is the opaque marker.
//   - A parent must be a directory in both orders: "a" after "a/b" must be a
//     directory entry (it is then kept, it does not merge), anything else is
//     rejected, since unpacking it would replace the directory.
//   - Lengths: a path (cleaned) or hardlink target at most 4096 bytes
//     (PATH_MAX) with components of at most 255 (NAME_MAX); a symlink target
//     at most 4096 bytes, its components unchecked (a symlink may dangle).
//   - Windows layers only: no drive letters ("C:\x", "C:x"), no component
//     with ':' (that is also an NTFS alternate data stream,
//     "readme.txt:evil.exe"), '*', '?', '<', '>', '|', '"' or a control
//     character, no reserved device name (CON, PRN, AUX, NUL, CONIN$,
//     CONOUT$, COM1-9, LPT1-9 and their superscript forms, whatever the case
//     and extension: they open the device), and no component ending in '.'
//     or ' ' (Windows strips them, so "a." and "a" would be one file and
//     pass the duplicate check). The same rules apply to hardlink targets;
//     symlink targets are not checked. Linux layers may use all of these.
//   - In reproducible mode, a zero Options.Created means the Unix epoch, the
//     spec's default creation time. Mtimes are truncated to whole seconds.
//   - Bytes after the end-of-archive marker are kept when they are zeros
//     (GNU tar pads archives to 10 KiB records) in minimal mode, and dropped
//     otherwise; reproducible mode always ends with exactly two zero blocks.
package layer

import (
	"fmt"
	"time"

	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/version"
)

// Mode selects how much of each header Normalize may rewrite.
type Mode string

const (
	// Minimal keeps every byte that is safe to keep; the default.
	Minimal Mode = "minimal"
	// Reproducible rewrites every header into a canonical form: mtimes
	// clamped to Created, no atime/ctime/uname/gname, allowlisted PAX
	// records only, no "./" prefixes, no root entry.
	Reproducible Mode = "reproducible"
)

// Default limits, used for zero fields of Limits.
const (
	DefaultMaxUncompressedBytes int64 = 16 << 30
	DefaultMaxEntries                 = 1 << 20
	DefaultMaxHeaderBytes       int64 = 1 << 20
	DefaultMaxRatio             int64 = 1000
	// DefaultMaxDecoderMemory is the decoders' own default (256 MiB): xz
	// -9 needs 64 MiB, zstd --ultra -22 128 MiB.
	DefaultMaxDecoderMemory int64 = compression.DefaultXzMemoryLimit
	// ratioGrace is how many uncompressed bytes are read before the
	// compression ratio is checked: the first blocks of any stream (a tar
	// header and an all-zero padding block compress extremely well) say
	// nothing about a bomb.
	ratioGrace int64 = 8 << 20
)

// Limits bound what a layer may cost. A zero field takes its default; a
// negative field disables that limit.
type Limits struct {
	// MaxUncompressedBytes caps the size of the tar stream.
	MaxUncompressedBytes int64
	// MaxEntries caps the number of tar headers, plus the parent
	// directories that entries imply without a header of their own (kiln
	// tracks every path, and one deep name implies many).
	MaxEntries int
	// MaxHeaderBytes caps one entry's header blocks, including PAX and GNU
	// long-name records.
	MaxHeaderBytes int64
	// MaxRatio caps uncompressed bytes per compressed byte (tar bombs). It
	// is only checked when Options.CompressedBytes is set, and only after
	// the first few MiB.
	MaxRatio int64
	// MaxDecoderMemory caps what a decoder may allocate for one stream: the
	// xz dictionary and the zstd window a layer or base archive declares.
	// Bigger ones are refused (LimitExceeded) before anything that size is
	// allocated.
	MaxDecoderMemory int64
}

// WithDefaults returns l with its zero fields set to the defaults and its
// negative ones to -1 ("no limit").
func (l Limits) WithDefaults() Limits {
	def := func(v, d int64) int64 {
		switch {
		case v == 0:
			return d
		case v < 0:
			return -1
		}
		return v
	}
	l.MaxUncompressedBytes = def(l.MaxUncompressedBytes, DefaultMaxUncompressedBytes)
	l.MaxEntries = int(def(int64(l.MaxEntries), DefaultMaxEntries))
	l.MaxHeaderBytes = def(l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	l.MaxRatio = def(l.MaxRatio, DefaultMaxRatio)
	l.MaxDecoderMemory = def(l.MaxDecoderMemory, DefaultMaxDecoderMemory)
	return l
}

// ReaderOptions are the decoder settings l asks for.
func (l Limits) ReaderOptions() compression.ReaderOptions {
	m := l.WithDefaults().MaxDecoderMemory
	return compression.ReaderOptions{XzMemoryLimit: m, ZstdMemoryLimit: m}
}

// Options configures Normalize.
type Options struct {
	// Mode is Minimal (default when empty) or Reproducible.
	Mode Mode
	// Created is the clamp for mtimes in reproducible mode and the mtime of
	// the Files/Hives directories Windows shaping adds. Zero means the epoch.
	Created time.Time
	// Windows shapes the layer for a Windows base: everything under Files/
	// (hives under Hives/), the Files and Hives directories first and once,
	// MSWINDOWS.rawsd on files and directories.
	Windows bool
	// Limits; zero fields take the defaults.
	Limits Limits
	// LayerName prefixes error messages.
	LayerName string
	// CompressedBytes, when set, reports how many compressed bytes have
	// been read so far; it drives the MaxRatio check.
	CompressedBytes func() int64
	// Overrides set modes and owners of every entry (layers[].fileMode,
	// dirMode, uid, gid), in either mode.
	Overrides Overrides
	// Files, when set, receives the path, sha256 and size of every regular
	// file of the output, hashed as its bytes stream through (see
	// FileList for what is listed). It is emptied first: after Normalize
	// it describes exactly the tar written, also when Build's fast path
	// gave up and normalized again.
	Files *FileList

	// stopOnChange makes Normalize return errChanged at the first output
	// byte that differs from the input: Build's fast path only needs to
	// know whether the input is clean.
	stopOnChange bool
}

// Overrides rewrite entries' modes and owners; nil fields keep the
// input's. A rewritten header disables Build's fast path like any other
// change, so every reader of the blob sees the overrides.
type Overrides struct {
	// FileMode replaces the permission bits (07777) of regular files. A
	// file that had an execute bit gets one wherever FileMode has a read
	// bit (0644 becomes 0755): an override must not break a binary.
	FileMode *int64
	// DirMode replaces the permission bits of directories.
	DirMode *int64
	// UID and GID replace every entry's owner; owner names are cleared,
	// since they would contradict the ids.
	UID, GID *int64
}

// String names the overrides in cache keys; "" when none is set.
func (o Overrides) String() string {
	var s string
	for _, f := range []struct {
		k string
		v *int64
		f string
	}{{"fileMode", o.FileMode, "%o"}, {"dirMode", o.DirMode, "%o"}, {"uid", o.UID, "%d"}, {"gid", o.GID, "%d"}} {
		if f.v != nil {
			s += fmt.Sprintf(" %s="+f.f, f.k, *f.v)
		}
	}
	return s
}

func (o Options) validate() error {
	switch o.Mode {
	case "", Minimal, Reproducible:
		return nil
	}
	return fmt.Errorf("unknown normalize mode %q (want minimal or reproducible)", o.Mode)
}

func (o Options) reproducible() bool { return o.Mode == Reproducible }

func (o Options) created() time.Time {
	if o.Created.IsZero() {
		return version.Epoch
	}
	return o.Created.UTC()
}

// Names of the counters in Stats.Changes.
const (
	ChangeMergedDirectories  = "mergedDirectories"
	ChangeDroppedRootEntries = "droppedRootEntries"
	ChangeWindowsPrefixed    = "windowsPrefixed"
	ChangeWindowsDirectories = "windowsDirectories"
	ChangeWindowsRawSD       = "windowsSecurityDescriptors"
	ChangeClampedMtimes      = "clampedMtimes"
	ChangeDroppedPAXRecords  = "droppedPAXRecords"
	ChangeDroppedTimes       = "droppedAccessChangeTimes"
	ChangeClearedOwnerNames  = "clearedOwnerNames"
	ChangeCleanedNames       = "cleanedNames"
	ChangeDroppedGlobal      = "droppedGlobalHeaders"
	ChangeHeaderOnlySize     = "zeroedLinkSizes"
	ChangeRewrittenHeaders   = "rewrittenHeaders"
	ChangeTrailer            = "normalizedTrailer"
	ChangeOverriddenModes    = "overriddenModes"
	ChangeOverriddenOwners   = "overriddenOwners"
)

// Stats describes one Normalize pass.
type Stats struct {
	// Entries is the number of entries written (global headers excluded).
	Entries int
	// Size is the size of the tar stream written.
	Size int64
	// Changed reports whether the output differs from the input at all.
	Changed bool
	// Changes counts what was rewritten, by the Change* names; nil when
	// nothing was.
	Changes map[string]int
}

func (s *Stats) count(what string, n int) {
	if n == 0 {
		return
	}
	if s.Changes == nil {
		s.Changes = map[string]int{}
	}
	s.Changes[what] += n
}
