package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"

	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/layer"
)

// ArchiveOptions bound what loading a base archive may cost. A base archive
// is fetched and decompressed like a layer source, so it gets the layers'
// limits: without them a small gzip bomb in base.archive fills the blob
// store's disk.
type ArchiveOptions struct {
	// Limits are the engine's layer limits. MaxUncompressedBytes caps the
	// decompressed archive stream and the sum of its members' sizes (checked
	// from each member's header before its bytes are stored); MaxRatio caps
	// decompressed bytes per compressed byte of a compressed archive;
	// MaxEntries caps the number of tar entries. Zero fields take the layer
	// defaults, negative ones disable that limit, as for layers.
	Limits layer.Limits
	// Reader caps the decoders' memory (zstd window, xz dictionary), as
	// layer.BuildOptions.ReaderOptions does for layers.
	Reader compression.ReaderOptions
}

// archiveRatioGrace is how many decompressed bytes are read before MaxRatio
// is checked; the layer pipeline uses the same 8 MiB (the first blocks of
// any stream compress extremely well and say nothing about a bomb).
const archiveRatioGrace int64 = 8 << 20

// archiveLimits are ArchiveOptions.Limits with defaults resolved; -1 is
// "no limit".
type archiveLimits struct {
	maxBytes   int64
	maxRatio   int64
	maxEntries int64
}

func resolveLimits(l layer.Limits) archiveLimits {
	return archiveLimits{
		maxBytes:   limitOrDefault(l.MaxUncompressedBytes, layer.DefaultMaxUncompressedBytes),
		maxRatio:   limitOrDefault(l.MaxRatio, layer.DefaultMaxRatio),
		maxEntries: limitOrDefault(int64(l.MaxEntries), layer.DefaultMaxEntries),
	}
}

// limitOrDefault applies the layer.Limits convention: 0 is the default,
// a negative value no limit.
func limitOrDefault(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return -1
	}
	return v
}

// limitReader counts the decompressed archive stream and enforces the size
// and ratio limits on it. Its errors are sticky: tar never reads past one.
type limitReader struct {
	r          io.Reader
	n          int64
	lim        archiveLimits
	compressed func() int64 // nil for an uncompressed archive
	err        error
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	m, err := l.r.Read(p)
	l.n += int64(m)
	if lerr := l.check(); lerr != nil {
		l.err = lerr
		return m, lerr
	}
	return m, err
}

func (l *limitReader) check() error {
	if l.lim.maxBytes >= 0 && l.n > l.lim.maxBytes {
		return failure.Permanentf(failure.LimitExceeded,
			"uncompressed size exceeds %d bytes (limit MaxUncompressedBytes)", l.lim.maxBytes)
	}
	if l.lim.maxRatio < 0 || l.compressed == nil || l.n <= archiveRatioGrace {
		return nil
	}
	if z := l.compressed(); z > 0 && l.n/z > l.lim.maxRatio {
		return failure.Permanentf(failure.LimitExceeded,
			"decompresses to more than %d times its compressed size (%d bytes from %d; limit MaxRatio)", l.lim.maxRatio, l.n, z)
	}
	return nil
}

// memberBudget checks each tar header before its member is read: the entry
// count, and the sum of the regular members' sizes. The sum is what the
// blob store receives; it is checked from the headers so that a member
// declaring more than the limit fails before any of it is written, and so
// that sparse members (whose holes tar expands) count at their full size.
type memberBudget struct {
	lim     archiveLimits
	entries int64
	bytes   int64
}

func (b *memberBudget) admit(hdr *tar.Header, name string) error {
	b.entries++
	if b.lim.maxEntries >= 0 && b.entries > b.lim.maxEntries {
		return failure.Permanentf(failure.LimitExceeded, "more than %d entries (limit MaxEntries)", b.lim.maxEntries)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	b.bytes += hdr.Size
	if b.lim.maxBytes >= 0 && (hdr.Size > b.lim.maxBytes || b.bytes > b.lim.maxBytes) {
		return failure.Permanentf(failure.LimitExceeded,
			"member %s: uncompressed size exceeds %d bytes (limit MaxUncompressedBytes): it is %d bytes, %d with the members before it",
			name, b.lim.maxBytes, hdr.Size, b.bytes)
	}
	return nil
}

// limitErr names base.archive in a limit error (of the limits above or of
// a decoder: zstd window, xz dictionary), keeping it LimitExceeded. It
// returns nil for any other error.
func limitErr(name, memberName string, err error) error {
	var fe *failure.Error
	if !errors.As(err, &fe) || fe.Reason != failure.LimitExceeded {
		return nil
	}
	where := ""
	if memberName != "" {
		where = ": reading member " + memberName
	}
	return failure.Permanent(failure.LimitExceeded, fmt.Errorf("base.archive (%s)%s: %w", name, where, err))
}
