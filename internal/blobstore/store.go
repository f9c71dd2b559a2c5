// Package blobstore is kiln's content-addressed on-disk store.
//
// Layout under the root directory:
//
//	blobs/sha256/<hex>   committed blobs, named by the sha256 of their bytes
//	tmp/                 files being written (blobs and metadata records)
//	meta/<xx>/<hash>.json small JSON records (see PutMeta)
//
// Several goroutines and several processes may share one root. Every write
// goes to a uniquely named temp file and is renamed into place only after it
// has been fully written and closed, so readers never see a partial blob.
//
// Crash semantics: nothing is fsynced (it costs too much on layer-sized
// files). Because the rename is the last step, a crash before it leaves only a
// temp file, which a later Open removes once its writer is known to be dead. A
// crash of the whole machine right after a rename may, on some filesystems,
// leave a blob with missing data under its final name; Open does not
// re-verify blobs, so a host that lost power should have its store wiped.
package blobstore

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Options tunes a Store.
type Options struct {
	// MaxBytes caps the total size of committed blobs; 0 means unlimited.
	// When exceeded, the least recently used blobs that are not in use
	// (pinned or open in this process) are removed. The limit is soft: pinned
	// blobs are never removed even when they alone exceed it.
	MaxBytes int64
}

// Store is a content-addressed blob store rooted at a directory. A Store is
// safe for concurrent use.
type Store struct {
	root string
	opts Options

	// now and rename are replaceable by tests so that LRU order and the
	// rename-onto-existing race can be exercised deterministically.
	now    func() time.Time
	rename func(oldpath, newpath string) error

	pinMu sync.Mutex
	pins  map[v1.Hash]int

	evictMu sync.Mutex
}

const (
	blobsDir = "blobs"
	tmpDir   = "tmp"
	metaDir  = "meta"
	algo     = "sha256"
	// staleAfter is the age after which a temp file is removed even when its
	// writer cannot be proven dead (another host, or a pid that is alive).
	staleAfter = 24 * time.Hour
)

// Open opens (creating if needed) the store at root and removes temp files
// left behind by writers that are no longer running.
func Open(root string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("opening blob store %q: %w", root, err)
	}
	s := &Store{
		root:   abs,
		opts:   opts,
		now:    time.Now,
		rename: os.Rename,
		pins:   map[v1.Hash]int{},
	}
	for _, dir := range []string{s.blobDir(), s.tmpDir(), s.metaDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("opening blob store: creating %s: %w", dir, err)
		}
	}
	if err := s.removeStaleTemps(); err != nil {
		return nil, fmt.Errorf("opening blob store %s: %w", abs, err)
	}
	return s, nil
}

func (s *Store) blobDir() string { return filepath.Join(s.root, blobsDir, algo) }
func (s *Store) tmpDir() string  { return filepath.Join(s.root, tmpDir) }
func (s *Store) metaDir() string { return filepath.Join(s.root, metaDir) }

// Path returns where the blob d lives (whether or not it exists). It returns
// "" for a hash that is not a well-formed sha256, so that a hash built from
// untrusted input can never name a file outside the store.
func (s *Store) Path(d v1.Hash) string {
	if !validHash(d) {
		return ""
	}
	return filepath.Join(s.blobDir(), d.Hex)
}

func validHash(d v1.Hash) bool {
	if d.Algorithm != algo || len(d.Hex) != 64 {
		return false
	}
	for i := 0; i < len(d.Hex); i++ {
		c := d.Hex[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func checkHash(d v1.Hash) error {
	if !validHash(d) {
		return fmt.Errorf("blob store: %q is not a sha256 digest", d.String())
	}
	return nil
}

// Has reports whether the blob d is committed.
func (s *Store) Has(d v1.Hash) bool {
	_, err := s.Stat(d)
	return err == nil
}

// Stat returns the size of the committed blob d. A missing blob yields an
// error satisfying errors.Is(err, fs.ErrNotExist).
func (s *Store) Stat(d v1.Hash) (int64, error) {
	if err := checkHash(d); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.Path(d))
	if err != nil {
		return 0, fmt.Errorf("blob store: stat %s: %w", d, err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("blob store: %s is not a regular file", s.Path(d))
	}
	return fi.Size(), nil
}

// Open opens the committed blob d for reading. The blob counts as most
// recently used and is protected from eviction (in this process) until the
// returned reader is closed. A missing blob yields an error satisfying
// errors.Is(err, fs.ErrNotExist).
func (s *Store) Open(d v1.Hash) (io.ReadCloser, error) {
	if err := checkHash(d); err != nil {
		return nil, err
	}
	release := s.Pin(d)
	f, err := os.Open(s.Path(d))
	if err != nil {
		release()
		return nil, fmt.Errorf("blob store: opening %s: %w", d, err)
	}
	s.touch(s.Path(d))
	return &blobReader{File: f, release: release}, nil
}

// touch records a use of a blob for LRU eviction. The modification time is
// used rather than the access time because atime is unreliable (noatime,
// relatime) and because mtime is visible to other processes sharing the
// root. Failure only degrades LRU accuracy, so it is ignored.
func (s *Store) touch(path string) {
	t := s.now()
	_ = os.Chtimes(path, t, t)
}

type blobReader struct {
	*os.File
	once    sync.Once
	release func()
}

func (r *blobReader) Close() error {
	err := r.File.Close()
	r.once.Do(r.release)
	return err
}

// Pin marks a blob in use by a running build so that eviction skips it;
// release undoes it and may be called more than once. Pins are counted, are
// per process, and may be taken before the blob exists.
func (s *Store) Pin(d v1.Hash) (release func()) {
	s.pinMu.Lock()
	s.pins[d]++
	s.pinMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.pinMu.Lock()
			defer s.pinMu.Unlock()
			if s.pins[d]--; s.pins[d] <= 0 {
				delete(s.pins, d)
			}
		})
	}
}

func (s *Store) pinned(d v1.Hash) bool {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	return s.pins[d] > 0
}
