package blobstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

type blobInfo struct {
	d    v1.Hash
	size int64
	used time.Time
}

// Evict removes least recently used blobs until the committed total is at
// most MaxBytes. Blobs pinned or open in this process are kept, so the total
// may stay above the limit. It does nothing when MaxBytes is 0. Blobs in use
// by another process sharing the root are not known here; on Unix removing
// them does not disturb open readers, on Windows the removal fails and the
// blob is skipped.
func (s *Store) Evict() error {
	if s.opts.MaxBytes <= 0 {
		return nil
	}
	s.evictMu.Lock()
	defer s.evictMu.Unlock()

	blobs, total, err := s.listBlobs()
	if err != nil {
		return err
	}
	// Oldest first; the digest breaks ties so the order is deterministic.
	sort.Slice(blobs, func(i, j int) bool {
		if !blobs[i].used.Equal(blobs[j].used) {
			return blobs[i].used.Before(blobs[j].used)
		}
		return blobs[i].d.Hex < blobs[j].d.Hex
	})
	for _, b := range blobs {
		if total <= s.opts.MaxBytes {
			break
		}
		if s.pinned(b.d) {
			continue
		}
		err := os.Remove(filepath.Join(s.blobDir(), b.d.Hex))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue // in use elsewhere (Windows); try the next one
		}
		total -= b.size
	}
	return nil
}

func (s *Store) listBlobs() ([]blobInfo, int64, error) {
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		return nil, 0, fmt.Errorf("blob store: listing blobs: %w", err)
	}
	var out []blobInfo
	var total int64
	for _, e := range entries {
		d := v1.Hash{Algorithm: algo, Hex: e.Name()}
		if !validHash(d) || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, blobInfo{d: d, size: info.Size(), used: info.ModTime()})
		total += info.Size()
	}
	return out, total, nil
}
