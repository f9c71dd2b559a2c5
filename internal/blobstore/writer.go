package blobstore

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/failure"
)

// writeBuffer batches the small writes compressors tend to make.
const writeBuffer = 256 << 10

// Writer writes one blob to a temp file, hashing and counting the bytes.
// Finish with Commit or Abort; Abort after Commit is a no-op, so
// `defer w.Abort()` is the idiom. A Writer is not safe for concurrent use.
type Writer struct {
	s    *Store
	f    *os.File
	buf  *bufio.Writer
	h    hash.Hash
	n    int64
	err  error // sticky write error
	done bool  // committed or aborted: the temp file is gone or renamed
}

// NewWriter creates a uniquely named temp file for a new blob.
func (s *Store) NewWriter() (*Writer, error) {
	f, err := s.createTemp()
	if err != nil {
		return nil, fmt.Errorf("blob store: creating temp file: %w", err)
	}
	return &Writer{s: s, f: f, buf: bufio.NewWriterSize(f, writeBuffer), h: sha256.New()}, nil
}

// Write appends p to the blob.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("blob store: write to a committed or aborted blob")
	}
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.buf.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("blob store: writing %s: %w", w.f.Name(), err)
		return n, w.err
	}
	return n, nil
}

// Digest returns the sha256 of the bytes written so far.
func (w *Writer) Digest() v1.Hash {
	return v1.Hash{Algorithm: algo, Hex: hex.EncodeToString(w.h.Sum(nil))}
}

// Size returns the number of bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// TempPath returns the temp file's path, with everything written so far
// flushed to it, for the rare caller that must re-read what it wrote.
func (w *Writer) TempPath() string {
	if !w.done && w.err == nil {
		if err := w.buf.Flush(); err != nil {
			w.err = fmt.Errorf("blob store: writing %s: %w", w.f.Name(), err)
		}
	}
	return w.f.Name()
}

// Commit finishes the blob and moves it to blobs/sha256/<digest>, returning
// the digest. When want is non-zero and differs from what was written the
// temp file is removed and a permanent DigestMismatch error is returned.
//
// When the blob already exists (written earlier or concurrently by another
// writer, maybe in another process) the temp file is dropped and Commit
// succeeds: identical content needs to be stored once. The rename is the last
// step, so a blob name never refers to a partially written file.
func (w *Writer) Commit(want v1.Hash) (v1.Hash, error) {
	if w.done {
		return v1.Hash{}, errors.New("blob store: Commit of a committed or aborted blob")
	}
	if err := w.finish(); err != nil {
		w.Abort()
		return v1.Hash{}, err
	}
	got := w.Digest()
	if want != (v1.Hash{}) && want != got {
		w.Abort()
		return v1.Hash{}, failure.Permanentf(failure.DigestMismatch,
			"blob store: written bytes (%d) have digest %s, expected %s", w.n, got, want)
	}
	if err := w.s.install(w.f.Name(), got, w.n); err != nil {
		w.Abort()
		return v1.Hash{}, err
	}
	w.done = true
	_ = w.s.Evict() // best effort: a full cache must not fail a finished write
	return got, nil
}

// CommitAndPin is Commit followed by Pin without a window in which eviction
// could remove the new blob.
func (w *Writer) CommitAndPin(want v1.Hash) (v1.Hash, func(), error) {
	// Pinning is by digest, which is only known after finish; pin it before
	// the rename (and the eviction Commit triggers) by computing it first.
	if w.done {
		return v1.Hash{}, nil, errors.New("blob store: Commit of a committed or aborted blob")
	}
	if err := w.flush(); err != nil {
		w.Abort()
		return v1.Hash{}, nil, err
	}
	release := w.s.Pin(w.Digest())
	d, err := w.Commit(want)
	if err != nil {
		release()
		return v1.Hash{}, nil, err
	}
	return d, release, nil
}

func (w *Writer) flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.buf.Flush(); err != nil {
		w.err = fmt.Errorf("blob store: writing %s: %w", w.f.Name(), err)
	}
	return w.err
}

// finish flushes and closes the temp file: on Windows a file cannot be
// renamed while open, and everywhere the close reports delayed write errors.
func (w *Writer) finish() error {
	if err := w.flush(); err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("blob store: closing %s: %w", w.f.Name(), err)
	}
	return nil
}

// Abort removes the temp file. It is safe to call more than once and after
// Commit, where it does nothing.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close() // may already be closed by finish
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob store: removing temp file: %w", err)
	}
	return nil
}

// install moves the finished temp file at tmp to the blob d of size n.
func (s *Store) install(tmp string, d v1.Hash, n int64) error {
	dst := s.Path(d)
	if s.existsWithSize(dst, n) {
		// Already stored: keep the existing file, which readers may hold
		// open (replacing an open file fails on Windows), and refresh it.
		// Checking the size suffices: the name is the sha256 of the bytes,
		// and a file gets it only by the rename of a closed temp file whose
		// digest Commit computed, so the file holds those bytes unless a
		// machine crash lost data after the rename (see the package
		// comment), which typically leaves it short or empty. Re-hashing
		// would read a layer-sized blob on every duplicate write; damage of
		// the same size is what wiping the store after a power loss is for.
		s.touch(dst)
		return removeTemp(tmp)
	}
	s.touch(tmp)
	err := s.rename(tmp, dst)
	if err == nil {
		return nil
	}
	// A concurrent writer of the same content won the race and the OS
	// refused to replace its file (ACCESS_DENIED on Windows when the
	// destination is open). The content is what we wanted: succeed.
	if same, _ := sameContent(dst, d); same {
		return removeTemp(tmp)
	}
	return fmt.Errorf("blob store: storing %s: %w", d, err)
}

func (s *Store) existsWithSize(path string, n int64) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == n
}

// sameContent re-hashes path. It runs only after a failed rename, which is
// rare, so the cost of reading the blob is acceptable for the certainty.
func sameContent(path string, d v1.Hash) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == d.Hex, nil
}

func removeTemp(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob store: removing temp file: %w", err)
	}
	return nil
}
