package image

import (
	"archive/tar"
	"errors"
	"fmt"

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
	// MaxEntries caps the number of tar entries; MaxDecoderMemory the
	// archive decoder's zstd window or xz dictionary. Zero fields take the
	// layer defaults, negative ones disable that limit, as for layers.
	Limits layer.Limits
}

// memberBudget checks each tar header before its member is read: the entry
// count, and the sum of the regular members' sizes. The sum is what the
// blob store receives; it is checked from the headers so that a member
// declaring more than the limit fails before any of it is written, and so
// that sparse members (whose holes tar expands) count at their full size.
type memberBudget struct {
	lim     layer.Limits // with defaults
	entries int64
	bytes   int64
}

func (b *memberBudget) admit(hdr *tar.Header, name string) error {
	b.entries++
	if limit := int64(b.lim.MaxEntries); limit >= 0 && b.entries > limit {
		return failure.Permanentf(failure.LimitExceeded, "more than %d entries (limit MaxEntries)", limit)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	b.bytes += hdr.Size
	if limit := b.lim.MaxUncompressedBytes; limit >= 0 && (hdr.Size > limit || b.bytes > limit) {
		return failure.Permanentf(failure.LimitExceeded,
			"member %s: uncompressed size exceeds %d bytes (limit MaxUncompressedBytes): it is %d bytes, %d with the members before it",
			name, limit, hdr.Size, b.bytes)
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
