package image

import (
	"errors"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/compression"
)

// Addition is a layer produced by the layer pipeline, stored in the blob store.
type Addition struct {
	Name       string          // layer name (for history created_by and errors)
	SourceKind string          // url, configMap, secret or blob: history names the kind, never the location
	Digest     v1.Hash         // sha256 of the blob
	DiffID     v1.Hash         // sha256 of the uncompressed tar
	Size       int64           // blob size in bytes
	MediaType  types.MediaType // OCI layer media type from the pipeline (…tar+gzip / …tar+zstd)
	Path       string          // blob file in the store
}

// StoreLayer returns a v1.Layer backed by the blob file at a.Path with media
// type mt (a.MediaType when mt is empty). Compressed opens the file; the
// pusher never calls Uncompressed, which decompresses it.
func StoreLayer(a Addition, mt types.MediaType) v1.Layer {
	if mt == "" {
		mt = a.MediaType
	}
	return &storeLayer{a: a, mt: mt}
}

type storeLayer struct {
	a  Addition
	mt types.MediaType
}

func (l *storeLayer) Digest() (v1.Hash, error)            { return l.a.Digest, nil }
func (l *storeLayer) DiffID() (v1.Hash, error)            { return l.a.DiffID, nil }
func (l *storeLayer) Size() (int64, error)                { return l.a.Size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func (l *storeLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.a.Path)
	if err != nil {
		return nil, fmt.Errorf("opening blob of layer %q: %w", l.a.Name, err)
	}
	return f, nil
}

func (l *storeLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	rc, _, err := compression.Open(f, compression.Auto, compression.ReaderOptions{})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("decompressing layer %q: %w", l.a.Name, err)
	}
	return &closeBoth{ReadCloser: rc, under: f}, nil
}

// closeBoth closes a decoder and the file beneath it.
type closeBoth struct {
	io.ReadCloser
	under io.Closer
}

func (c *closeBoth) Close() error {
	return errors.Join(c.ReadCloser.Close(), c.under.Close())
}

// foreignLayer is a non-distributable layer whose bytes kiln never has (a
// Windows base layer served from Microsoft's URLs). Registries do not store
// it and remote.Write skips it by media type.
type foreignLayer struct {
	desc   v1.Descriptor
	diffID v1.Hash
}

func (l *foreignLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *foreignLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *foreignLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *foreignLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *foreignLayer) Descriptor() (*v1.Descriptor, error) { d := l.desc; return &d, nil }

func (l *foreignLayer) Compressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("foreign layer %s is not distributable: its bytes live at %v", l.desc.Digest, l.desc.URLs)
}

func (l *foreignLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }

// retypedLayer presents a base layer under another media type, for a Docker
// base converted to OCI. The bytes (and so the digest) are unchanged.
type retypedLayer struct {
	v1.Layer
	mt types.MediaType
}

func (l *retypedLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

// retype returns l with media type mt, keeping it mountable: remote.Write
// only mounts layers that are *remote.MountableLayer.
func retype(l v1.Layer, mt types.MediaType) v1.Layer {
	if ml, ok := l.(*remote.MountableLayer); ok {
		return &remote.MountableLayer{Layer: &retypedLayer{Layer: ml.Layer, mt: mt}, Reference: ml.Reference}
	}
	return &retypedLayer{Layer: l, mt: mt}
}
