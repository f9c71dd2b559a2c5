package image

import (
	"bytes"
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/failure"
)

// Verify checks an assembled image before any push:
//   - the manifest digest and the config descriptor match their bytes;
//   - manifest layers, image layers and config.rootfs.diff_ids agree in
//     count, and by position in digest, size, media type and DiffID (added
//     layers carry the DiffID the pipeline measured; base layers are trusted
//     from the base config);
//   - the blob file of every added layer exists with the recorded size;
//   - media types are consistent: no OCI-only types or annotations in a
//     Docker manifest, no Docker config in an OCI one.
//
// It does not use validate.Image, which cannot read zstd or uncompressed
// layers and reports annotations nil vs {} as a mismatch; nothing here reads
// layer contents, so it is cheap for any image size.
func Verify(a *Assembled) error {
	if a == nil || a.Image == nil {
		return fmt.Errorf("verifying: no image")
	}
	raw, err := a.Image.RawManifest()
	if err != nil {
		return fmt.Errorf("verifying: reading the manifest: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("verifying: parsing the manifest: %w", err)
	}
	if err := verifyManifestDigest(a, raw); err != nil {
		return err
	}
	cf, err := verifyConfig(a, m)
	if err != nil {
		return err
	}
	if err := verifyMediaTypes(m); err != nil {
		return err
	}
	layers, err := a.Image.Layers()
	if err != nil {
		return fmt.Errorf("verifying: listing layers: %w", err)
	}
	if len(layers) != len(m.Layers) || len(m.Layers) != len(cf.RootFS.DiffIDs) {
		return failure.Permanentf(failure.DiffIDMismatch,
			"verifying: the manifest lists %d layers, the image has %d and config.rootfs.diff_ids has %d",
			len(m.Layers), len(layers), len(cf.RootFS.DiffIDs))
	}
	for i, l := range layers {
		if err := verifyLayer(a.layerName(i), l, m.Layers[i], cf.RootFS.DiffIDs[i]); err != nil {
			return err
		}
	}
	return nil
}

func (a *Assembled) layerName(i int) string {
	if i < len(a.layerNames) {
		return a.layerNames[i]
	}
	return fmt.Sprintf("layer %d", i+1)
}

func verifyManifestDigest(a *Assembled, raw []byte) error {
	d, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("verifying: hashing the manifest: %w", err)
	}
	if a.Digest != (v1.Hash{}) && a.Digest != d {
		return failure.Permanentf(failure.DigestMismatch,
			"verifying: the manifest has digest %s, expected %s", d, a.Digest)
	}
	return nil
}

func verifyConfig(a *Assembled, m *v1.Manifest) (*v1.ConfigFile, error) {
	raw, err := a.Image.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("verifying: reading the config: %w", err)
	}
	d, n, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("verifying: hashing the config: %w", err)
	}
	if m.Config.Digest != d || m.Config.Size != n {
		return nil, failure.Permanentf(failure.DigestMismatch,
			"verifying: the manifest's config descriptor says %s (%d bytes) but the config is %s (%d bytes)",
			m.Config.Digest, m.Config.Size, d, n)
	}
	if a.ConfigDigest != (v1.Hash{}) && a.ConfigDigest != d {
		return nil, failure.Permanentf(failure.DigestMismatch,
			"verifying: the config has digest %s, expected %s", d, a.ConfigDigest)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("verifying: parsing the config: %w", err)
	}
	if cf.OS == "" || cf.Architecture == "" {
		return nil, failure.Permanentf(failure.InvalidSpec,
			"verifying: the config has os %q and architecture %q; both must be set", cf.OS, cf.Architecture)
	}
	return cf, nil
}

// verifyMediaTypes checks that the manifest is all Docker or all OCI.
func verifyMediaTypes(m *v1.Manifest) error {
	docker := m.MediaType == types.DockerManifestSchema2
	switch {
	case docker && m.Config.MediaType != types.DockerConfigJSON:
		return mediaTypeError("config", m.Config.MediaType, m.MediaType)
	case !docker && m.MediaType != types.OCIManifestSchema1:
		return failure.Permanentf(failure.InvalidSpec, "verifying: unsupported manifest media type %q", m.MediaType)
	case !docker && m.Config.MediaType != types.OCIConfigJSON:
		return mediaTypeError("config", m.Config.MediaType, m.MediaType)
	case docker && len(m.Annotations) > 0:
		return failure.Permanentf(failure.InvalidSpec, "verifying: a Docker v2 schema 2 manifest cannot carry annotations")
	}
	for i, l := range m.Layers {
		if isDockerLayer(l.MediaType) != docker {
			return mediaTypeError(fmt.Sprintf("layer %d", i+1), l.MediaType, m.MediaType)
		}
	}
	return nil
}

func isDockerLayer(mt types.MediaType) bool {
	switch mt {
	case types.DockerLayer, types.DockerForeignLayer, types.DockerUncompressedLayer:
		return true
	}
	return false
}

func mediaTypeError(what string, mt, manifest types.MediaType) error {
	return failure.Permanentf(failure.InvalidSpec, "verifying: %s has media type %s, which does not belong in a %s manifest", what, mt, manifest)
}

// verifyLayer compares one layer with its manifest descriptor and diff_id.
func verifyLayer(name string, l v1.Layer, d v1.Descriptor, diffID v1.Hash) error {
	digest, err := l.Digest()
	if err != nil {
		return fmt.Errorf("verifying %s: %w", name, err)
	}
	size, err := l.Size()
	if err != nil {
		return fmt.Errorf("verifying %s: %w", name, err)
	}
	mt, err := l.MediaType()
	if err != nil {
		return fmt.Errorf("verifying %s: %w", name, err)
	}
	got, err := l.DiffID()
	if err != nil {
		return fmt.Errorf("verifying %s: %w", name, err)
	}
	switch {
	case digest != d.Digest:
		return failure.Permanentf(failure.DigestMismatch, "verifying %s: the manifest says digest %s, the blob is %s", name, d.Digest, digest)
	case size != d.Size:
		return failure.Permanentf(failure.DigestMismatch, "verifying %s: the manifest says size %d, the blob has %d bytes", name, d.Size, size)
	case mt != d.MediaType:
		return failure.Permanentf(failure.InvalidSpec, "verifying %s: the manifest says media type %s, the layer is %s", name, d.MediaType, mt)
	case got != diffID:
		return failure.Permanentf(failure.DiffIDMismatch, "verifying %s: config.rootfs.diff_ids has %s, the layer's DiffID is %s", name, diffID, got)
	}
	if sl, ok := l.(*storeLayer); ok {
		return verifyBlobFile(name, sl)
	}
	return nil
}

// verifyBlobFile checks that an added layer's blob is there with its size.
// The store names blobs by content, so the name vouches for the digest.
func verifyBlobFile(name string, l *storeLayer) error {
	fi, err := os.Stat(l.a.Path)
	if err != nil {
		return fmt.Errorf("verifying %s: its blob is missing: %w", name, err)
	}
	if fi.Size() != l.a.Size {
		return failure.Permanentf(failure.DigestMismatch,
			"verifying %s: recorded size %d but the blob file %s has %d bytes", name, l.a.Size, l.a.Path, fi.Size())
	}
	return nil
}
