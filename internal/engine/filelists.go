package engine

import (
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/layer"
)

// File lists (the SBOM's files) are stored as metadata records keyed by
// the layer's diffID: the list is a function of the uncompressed tar alone,
// so every build that has proved it may use a layer (proof.go) may use its
// list too, and the two shapings of one source (different tars) have
// different lists. Records are not evicted with blobs; a list whose blob
// is gone is never read, since the layer is then rebuilt and listed again.

func filesKey(diffID string) string { return "files-" + hashHex(diffID) }

// storeFileList records fl for the layer with diffID. A failed write only
// costs one read of the blob when the list is next needed.
func (e *Engine) storeFileList(diffID string, fl *layer.FileList) {
	_ = e.Store.PutMeta(filesKey(diffID), fl)
}

// fileList returns the file list of a layer: the one its build recorded,
// else the cached record, else, for a layer cached before lists were kept
// (or whose record was lost), one read of the stored blob (b is pinned and
// present: finish checked), whose list is then recorded.
func (e *Engine) fileList(name string, p produced, b *builtLayer) (*layer.FileList, error) {
	if p.files != nil {
		return p.files, nil
	}
	var fl layer.FileList
	if ok, err := e.Store.GetMeta(filesKey(p.layer.DiffID), &fl); err == nil && ok {
		return &fl, nil
	}
	alg := compression.Gzip
	if b.addition.MediaType == types.OCILayerZStd {
		alg = compression.Zstd
	}
	f, err := e.Store.Open(b.addition.Digest)
	if err != nil {
		return nil, failure.Retryable(failure.Layerf(name, "reading the cached blob for its file list: %w", err), 0)
	}
	defer f.Close()
	list, err := layer.ListFiles(f, alg, e.Limits, 0)
	if err != nil {
		return nil, failure.Retryable(failure.Layerf(name, "cached blob %s: %w", b.addition.Digest, err), 0)
	}
	e.storeFileList(p.layer.DiffID, list)
	return list, nil
}

// files maps the diffIDs of the set's layers to their lists, nil when no
// job asked for them.
func (s *layerSet) files() map[string]*layer.FileList {
	var out map[string]*layer.FileList
	for _, b := range s.jobs {
		if b.files == nil {
			continue
		}
		if out == nil {
			out = map[string]*layer.FileList{}
		}
		out[b.status.DiffID] = b.files
	}
	return out
}
