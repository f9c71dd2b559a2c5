package image

import (
	"bytes"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/failure"
)

// build turns what read collected into a Base.
func (ar *archive) build(p v1.Platform) (*Base, error) {
	var (
		b   *Base
		err error
	)
	switch {
	case ar.json["index.json"] != nil:
		b, err = ar.buildOCI(p)
	case ar.json["manifest.json"] != nil:
		b, err = ar.buildDocker(p)
	default:
		return nil, failure.Permanentf(failure.InvalidArchive,
			"base %s: neither index.json (OCI image layout) nor manifest.json (docker save) is in the archive", ar.name)
	}
	if err != nil {
		return nil, err
	}
	b.release = ar.pinsOf()
	return b, nil
}

// candidate is one image of a multi-image archive.
type candidate struct {
	manifest *v1.Manifest
	config   *v1.ConfigFile
	rawCfg   []byte
	platform v1.Platform
	// docker-save only: layer member paths and foreign layer descriptors.
	layerPaths   []string
	layerSources map[v1.Hash]v1.Descriptor
}

// choose picks the candidate for p. A single image is held to the same rule
// as a single registry image: taken as it is when p is zero, else it must
// match p. Several images are chosen among like an index's children.
func (ar *archive) choose(cs []*candidate, p v1.Platform) (*candidate, error) {
	if len(cs) == 0 {
		return nil, failure.Permanentf(failure.InvalidArchive, "base %s: the archive holds no image", ar.name)
	}
	if len(cs) == 1 {
		if err := checkSinglePlatform(ar.name, p, cs[0].platform); err != nil {
			return nil, err
		}
		return cs[0], nil
	}
	p = orDefault(p)
	var have []string
	for _, c := range cs {
		if platformMatches(p, c.platform) {
			return c, nil
		}
		have = append(have, formatPlatform(c.platform))
	}
	return nil, errNoPlatform("archive "+ar.name, p, have)
}

// --- OCI image layout ---

func (ar *archive) buildOCI(p v1.Platform) (*Base, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(ar.json["index.json"]))
	if err != nil {
		return nil, failure.Permanentf(failure.InvalidArchive, "base %s: member index.json: %v", ar.name, err)
	}
	var cs []*candidate
	seen := map[v1.Hash]bool{}
	if err := ar.collectOCI(idx.Manifests, 0, seen, &cs); err != nil {
		return nil, err
	}
	c, err := ar.choose(cs, p)
	if err != nil {
		return nil, err
	}
	return ar.baseFromOCI(c)
}

// collectOCI walks an index (and nested indexes, a few levels deep) and
// loads every image manifest with its config.
func (ar *archive) collectOCI(descs []v1.Descriptor, depth int, seen map[v1.Hash]bool, out *[]*candidate) error {
	if depth > 4 {
		return failure.Permanentf(failure.InvalidArchive, "base %s: image indexes nested more than 4 deep", ar.name)
	}
	for _, d := range descs {
		if seen[d.Digest] {
			continue // docker save lists an image once per tag
		}
		seen[d.Digest] = true
		switch {
		case d.MediaType.IsIndex():
			m, err := ar.blobByDigest(d.Digest, "image index "+d.Digest.String())
			if err != nil {
				return err
			}
			var idx v1.IndexManifest
			if err := ar.readJSON(m, &idx); err != nil {
				return err
			}
			if err := ar.collectOCI(idx.Manifests, depth+1, seen, out); err != nil {
				return err
			}
		case d.MediaType.IsImage():
			if d.Platform != nil && d.Platform.OS == "unknown" {
				continue // attestation manifests
			}
			c, err := ar.loadOCIImage(d)
			if err != nil {
				return err
			}
			*out = append(*out, c)
		}
	}
	return nil
}

func (ar *archive) loadOCIImage(d v1.Descriptor) (*candidate, error) {
	mm, err := ar.blobByDigest(d.Digest, "image manifest "+d.Digest.String())
	if err != nil {
		return nil, err
	}
	var m v1.Manifest
	if err := ar.readJSON(mm, &m); err != nil {
		return nil, err
	}
	if m.MediaType == "" {
		m.MediaType = d.MediaType
	}
	c := &candidate{manifest: &m}
	if err := ar.loadConfig(c, m.Config.Digest); err != nil {
		return nil, err
	}
	if d.Platform != nil && c.platform.OS == "" {
		c.platform = *d.Platform
	}
	return c, nil
}

func (ar *archive) loadConfig(c *candidate, d v1.Hash) error {
	cm, err := ar.blobByDigest(d, "image config "+d.String())
	if err != nil {
		return err
	}
	return ar.parseConfig(c, cm)
}

func (ar *archive) parseConfig(c *candidate, cm *member) error {
	var raw json.RawMessage
	if err := ar.readJSON(cm, &raw); err != nil {
		return err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return failure.Permanentf(failure.InvalidArchive, "base %s: member %s is not an image config: %v", ar.name, cm.path, err)
	}
	ar.use(cm.blob)
	c.config, c.platform = cf, platformOf(cf)
	c.rawCfg, err = ar.readAll(cm)
	return err
}

// readAll returns a stored JSON member's exact bytes (the config digest
// must stay that of the archive's bytes).
func (ar *archive) readAll(m *member) ([]byte, error) {
	rc, err := ar.store.Open(m.blob)
	if err != nil {
		return nil, fmt.Errorf("loading base %s: %w", ar.name, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		return nil, fmt.Errorf("loading base %s: reading %s: %w", ar.name, m.path, err)
	}
	return buf.Bytes(), nil
}

func (ar *archive) baseFromOCI(c *candidate) (*Base, error) {
	m := c.manifest
	docker := m.MediaType == types.DockerManifestSchema2
	diffIDs := c.config.RootFS.DiffIDs
	if len(diffIDs) != len(m.Layers) {
		return nil, failure.Permanentf(failure.InvalidArchive,
			"base %s: the manifest lists %d layers but the config has %d diff_ids", ar.name, len(m.Layers), len(diffIDs))
	}
	lb := &layerBuilder{ar: ar, docker: docker}
	for i, d := range m.Layers {
		if err := lb.addOCI(i, d, diffIDs[i]); err != nil {
			return nil, err
		}
	}
	return lb.base(c)
}

// --- docker save ---

type dockerManifestEntry struct {
	Config       string
	RepoTags     []string
	Layers       []string
	LayerSources map[v1.Hash]v1.Descriptor `json:",omitempty"`
}

func (ar *archive) buildDocker(p v1.Platform) (*Base, error) {
	var entries []dockerManifestEntry
	if err := json.Unmarshal(ar.json["manifest.json"], &entries); err != nil {
		return nil, failure.Permanentf(failure.InvalidArchive, "base %s: member manifest.json: %v", ar.name, err)
	}
	var cs []*candidate
	for _, e := range entries {
		cm, err := ar.resolve(e.Config)
		if err != nil {
			return nil, err
		}
		c := &candidate{layerPaths: e.Layers, layerSources: e.LayerSources}
		if err := ar.parseConfig(c, cm); err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	c, err := ar.choose(cs, p)
	if err != nil {
		return nil, err
	}
	diffIDs := c.config.RootFS.DiffIDs
	if len(diffIDs) != len(c.layerPaths) {
		return nil, failure.Permanentf(failure.InvalidArchive,
			"base %s: manifest.json lists %d layers but the config has %d diff_ids", ar.name, len(c.layerPaths), len(diffIDs))
	}
	lb := &layerBuilder{ar: ar, docker: true}
	for i, lp := range c.layerPaths {
		if err := lb.addDocker(i, lp, diffIDs[i], c.layerSources); err != nil {
			return nil, err
		}
	}
	return lb.base(c)
}

// layerBuilder collects the base's layers and descriptors.
type layerBuilder struct {
	ar      *archive
	docker  bool
	layers  []v1.Layer
	descs   []v1.Descriptor
	gzipped int
}

func (lb *layerBuilder) addOCI(i int, d v1.Descriptor, diffID v1.Hash) error {
	m, ok := lb.ar.byDigest[d.Digest]
	if !ok && !d.MediaType.IsDistributable() {
		lb.add(&foreignLayer{desc: d, diffID: diffID}, d)
		return nil
	}
	if !ok {
		_, err := lb.ar.blobByDigest(d.Digest, fmt.Sprintf("layer %d", i+1))
		return err
	}
	return lb.addMember(i, m, diffID, d)
}

func (lb *layerBuilder) addDocker(i int, p string, diffID v1.Hash, sources map[v1.Hash]v1.Descriptor) error {
	if d, ok := sources[diffID]; ok && !d.MediaType.IsDistributable() {
		lb.add(&foreignLayer{desc: d, diffID: diffID}, d)
		return nil
	}
	m, err := lb.ar.resolve(p)
	if err != nil {
		return err
	}
	return lb.addMember(i, m, diffID, v1.Descriptor{})
}

// addMember adds a stored layer. orig is the archive's descriptor (OCI) or
// zero (docker save); its annotations and URLs are kept for compressed
// blobs that are used as they are.
func (lb *layerBuilder) addMember(i int, m *member, diffID v1.Hash, orig v1.Descriptor) error {
	var mt types.MediaType
	switch {
	case m.gzipped:
		if m.raw != diffID {
			return failure.Permanentf(failure.InvalidArchive,
				"base %s: layer %d (%s): the config's diff_id is %s but the tar's sha256 is %s", lb.ar.name, i+1, m.path, diffID, m.raw)
		}
		mt = types.OCILayer
		if lb.docker {
			mt = types.DockerLayer
		}
		orig = v1.Descriptor{}
		lb.gzipped++
	case m.alg == compression.Gzip:
		mt = orig.MediaType
		if mt == "" || lb.docker {
			mt = types.DockerLayer
		}
	case m.alg == compression.Zstd && !lb.docker:
		mt = orig.MediaType
		if mt == "" {
			mt = types.OCILayerZStd
		}
	default:
		return failure.Permanentf(failure.InvalidArchive,
			"base %s: layer %d (%s) is %s, which a %s image cannot carry", lb.ar.name, i+1, m.path, algName(m.alg), manifestKind(lb.docker))
	}
	if !lb.docker {
		mt = ociMediaType(mt)
	}
	d := orig
	d.MediaType, d.Digest, d.Size = mt, m.blob, m.size
	l := StoreLayer(Addition{
		Name: fmt.Sprintf("base layer %d", i+1), SourceKind: "archive",
		Digest: m.blob, DiffID: diffID, Size: m.size, MediaType: mt,
		Path: lb.ar.store.Path(m.blob),
	}, mt)
	lb.ar.use(m.blob)
	lb.add(l, d)
	return nil
}

func (lb *layerBuilder) add(l v1.Layer, d v1.Descriptor) {
	lb.layers = append(lb.layers, l)
	lb.descs = append(lb.descs, d)
}

func (lb *layerBuilder) base(c *candidate) (*Base, error) {
	mt, cmt := types.OCIManifestSchema1, types.OCIConfigJSON
	if lb.docker {
		mt, cmt = types.DockerManifestSchema2, types.DockerConfigJSON
	}
	img, err := newMemImage(mt, cmt, c.rawCfg, lb.layers, lb.descs, nil)
	if err != nil {
		return nil, fmt.Errorf("loading base %s: %w", lb.ar.name, err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("loading base %s: %w", lb.ar.name, err)
	}
	b := &Base{Image: img, Name: lb.ar.name, Digest: d, Platform: c.platform, Archive: true}
	if lb.gzipped > 0 {
		b.Notes = append(b.Notes, fmt.Sprintf("compressed %d uncompressed base layer(s) with gzip while loading the archive", lb.gzipped))
	}
	return b, nil
}

func algName(a compression.Algorithm) string {
	if a == "" {
		return "not a tar stream"
	}
	return string(a) + "-compressed"
}

func manifestKind(docker bool) string {
	if docker {
		return "Docker v2 schema 2"
	}
	return "OCI"
}
