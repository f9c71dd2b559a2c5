package layer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/compression"
)

// DefaultMaxFiles is the number of regular files a FileList holds before it
// gives up on the list (Omitted): an SBOM listing a million files helps
// nobody and costs memory in the manager, and a file list is never worth
// failing a build for.
const DefaultMaxFiles = 100_000

// File is one regular file of a layer as it lands in the image.
type File struct {
	// Path is the cleaned path inside the layer, without a leading "./"
	// or "/" ("usr/bin/env"; "Files/app/x.exe" in a Windows layer, where
	// shaping put it).
	Path string `json:"path"`
	// Digest is the sha256 of the file's content.
	Digest v1.Hash `json:"digest"`
	Size   int64   `json:"size"`
}

// FileList collects the regular files of a layer while Normalize streams
// them (Options.Files): the hashes are computed from the bytes on their
// way to the output, so listing costs no second read of the layer.
//
// Only regular files are listed ('0', '\x00', '7'), in the order of the
// output tar. Not listed, by choice:
//   - hardlinks: they name a file listed already (the normalizer checks the
//     target is an earlier entry), and SPDX describes files, not links to
//     them; listing the target once is the truth about the image's content.
//   - whiteouts (".wh.*" markers): they delete files of lower layers and
//     are not files of the image.
//   - directories, symlinks, devices and fifos: no content to hash.
//
// Beyond Max files the list is dropped (Files nil, Omitted true) while
// Count keeps counting; hashing stops then, so a huge layer pays nothing.
type FileList struct {
	Files []File `json:"files,omitempty"`
	// Count is the number of regular files in the layer, listed or not.
	Count int `json:"count"`
	// Omitted reports that the layer had more than Max regular files and
	// Files was dropped.
	Omitted bool `json:"omitted,omitempty"`
	// Max caps len(Files); 0 means DefaultMaxFiles. Not stored: a list
	// read back from the cache is complete or omitted already.
	Max int `json:"-"`
}

// NewFileList returns an empty list capped at max files (0: DefaultMaxFiles).
func NewFileList(max int) *FileList { return &FileList{Max: max} }

func (l *FileList) limit() int {
	if l.Max <= 0 {
		return DefaultMaxFiles
	}
	return l.Max
}

// reset empties l for a new pass: Build's fast path may give up half-way
// and normalize the input again, and only the last pass counts.
func (l *FileList) reset() {
	l.Files, l.Count, l.Omitted = l.Files[:0], 0, false
}

// wants reports whether the next file is to be hashed, counting it. It
// runs on the normalizer's goroutine and never touches Files, which the
// hashing goroutine owns while a pass runs (see hashFiles).
func (l *FileList) wants() bool {
	l.Count++
	if l.Omitted {
		return false
	}
	if l.Count > l.limit() {
		l.Omitted = true
		return false
	}
	return true
}

func (l *FileList) add(p string, sum []byte, size int64) {
	l.Files = append(l.Files, File{Path: p, Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum)}, Size: size})
}

// fileHash is the normalizer's state for Options.Files: the file being
// copied, and the goroutine that hashes. The normalizer hands each chunk
// of a listed file's body to that goroutine (a copy, in one of a few
// recycled buffers) instead of hashing it in line, so on more than one
// core the per-file sha256 overlaps the tar checks, the DiffID hash and
// the encoder instead of adding to them; the few buffers bound the memory
// and make the normalizer wait when hashing falls behind.
type fileHash struct {
	active bool
	work   chan hashChunk
	free   chan []byte
	done   chan struct{}
}

// hashChunk is a piece of a listed file's body, or (end) the end of the
// file with its path and size, or (omit) the news that the list went past
// its cap and is dropped.
type hashChunk struct {
	data      []byte
	end, omit bool
	path      string
	size      int64
}

// hashBuffers is how many chunks may wait for the hashing goroutine.
const hashBuffers = 4

// startHashing starts the hashing goroutine of a pass that lists files.
func (n *normalizer) startHashing() {
	if n.opts.Files == nil {
		return
	}
	f := &n.file
	f.work, f.free, f.done = make(chan hashChunk, hashBuffers), make(chan []byte, hashBuffers), make(chan struct{})
	for range hashBuffers {
		f.free <- make([]byte, 0, ioBuffer)
	}
	go hashFiles(n.opts.Files, f.work, f.free, f.done)
}

// hashFiles hashes the chunks of each file in order and adds the file to
// list at its end. It is the only writer of list while the pass runs.
func hashFiles(list *FileList, work <-chan hashChunk, free chan<- []byte, done chan<- struct{}) {
	defer close(done)
	h := sha256.New()
	var sum []byte
	for c := range work {
		if c.omit {
			list.Files = nil
			continue
		}
		if c.end {
			sum = h.Sum(sum[:0])
			list.add(c.path, sum, c.size)
			h.Reset()
			continue
		}
		h.Write(c.data)
		free <- c.data[:0]
	}
}

// stopHashing waits until every file handed over is hashed and listed:
// Normalize returns only then, so its caller reads a complete list.
func (n *normalizer) stopHashing() {
	if n.file.work == nil {
		return
	}
	close(n.file.work)
	<-n.file.done
	n.file.work = nil
}

// hashBody hands a chunk of the current file's body to the hasher.
func (n *normalizer) hashBody(b []byte) {
	if !n.file.active {
		return
	}
	buf := append(<-n.file.free, b...)
	n.file.work <- hashChunk{data: buf}
}

// beginFile starts hashing the body of entry p of type typ when it is a
// regular file the list wants.
func (n *normalizer) beginFile(p string, typ byte) {
	n.file.active = false
	if n.opts.Files == nil || !isRegular(typ) || isWhiteout(p) {
		return
	}
	omitted := n.opts.Files.Omitted
	n.file.active = n.opts.Files.wants()
	if !omitted && n.opts.Files.Omitted {
		n.file.work <- hashChunk{omit: true}
	}
}

func (n *normalizer) endFile(p string, size int64) {
	if !n.file.active {
		return
	}
	n.file.work <- hashChunk{end: true, path: p, size: size}
	n.file.active = false
}

// ListFiles reads a stored layer blob (compressed with alg, or not) and
// returns its file list, exactly as Options.Files would have recorded it
// while the layer was built: the blob is the output of Normalize, so
// normalizing it again (minimal mode, no shaping: Windows paths are in
// shape already) changes nothing and sees the same paths. This is the one
// case where listing costs a read: a layer cached before file lists were
// kept. lim bounds the read as any layer's; max caps the list.
func ListFiles(r io.Reader, alg compression.Algorithm, lim Limits, max int) (*FileList, error) {
	src := r
	if alg != compression.None {
		dec, err := compression.NewReader(r, alg, lim.ReaderOptions())
		if err != nil {
			return nil, fmt.Errorf("listing the files of a stored layer: %w", err)
		}
		defer dec.Close()
		src = dec
	}
	fl := NewFileList(max)
	if _, err := Normalize(io.Discard, src, Options{Limits: lim, Files: fl}); err != nil {
		return nil, fmt.Errorf("listing the files of a stored layer: %w", err)
	}
	return fl, nil
}
