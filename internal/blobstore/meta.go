package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// metaRecord is what a metadata file holds. The key is stored so that a
// record can be identified when browsing the store, and checked on read.
type metaRecord struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// metaPath maps any key to a safe file name: keys are caller-chosen strings
// ("layer/<source digest>/<options>") that may contain separators.
func (s *Store) metaPath(key string) string {
	sum := sha256.Sum256([]byte(key))
	h := hex.EncodeToString(sum[:])
	return filepath.Join(s.metaDir(), h[:2], h+".json")
}

// PutMeta stores v (JSON-encoded) under key, replacing any previous record
// atomically: a concurrent GetMeta sees the old or the new record, never a
// mix. Records are not evicted with blobs, so a record naming a blob does not
// guarantee the blob is still present; check Has.
func (s *Store) PutMeta(key string, v any) error {
	value, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("blob store: encoding metadata %q: %w", key, err)
	}
	data, err := json.Marshal(metaRecord{Key: key, Value: value})
	if err != nil {
		return fmt.Errorf("blob store: encoding metadata %q: %w", key, err)
	}
	dst := s.metaPath(key)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("blob store: writing metadata %q: %w", key, err)
	}
	if err := s.writeTempAndRename(data, dst); err != nil {
		return fmt.Errorf("blob store: writing metadata %q: %w", key, err)
	}
	return nil
}

func (s *Store) writeTempAndRename(data []byte, dst string) error {
	f, err := s.createTemp()
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := s.rename(f.Name(), dst); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// GetMeta decodes the record stored under key into v and reports whether it
// was found. A record that cannot be decoded returns false and an error;
// callers using metadata as a cache may treat that as a miss.
func (s *Store) GetMeta(key string, v any) (bool, error) {
	data, err := os.ReadFile(s.metaPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("blob store: reading metadata %q: %w", key, err)
	}
	var rec metaRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return false, fmt.Errorf("blob store: decoding metadata %q: %w", key, err)
	}
	if rec.Key != key {
		return false, fmt.Errorf("blob store: metadata file for %q holds key %q", key, rec.Key)
	}
	if err := json.Unmarshal(rec.Value, v); err != nil {
		return false, fmt.Errorf("blob store: decoding metadata %q: %w", key, err)
	}
	return true, nil
}
