package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/retry"
	"github.com/kiln-build/kiln/internal/source"
	"github.com/kiln-build/kiln/internal/version"
)

// layerParallelism is how many layers of one build are produced at once.
// Each pipeline already keeps both cores busy (decode | normalize | encode),
// so more would only add memory.
const layerParallelism = 2

// builtLayer is a layer ready for assembly.
type builtLayer struct {
	addition image.Addition
	status   kilnv1.LayerStatus
	bytesIn  int64
	cached   bool
	// input is what the inputDigest hashes for this layer (see inputOf).
	input string
	// release unpins the blob once the build has pushed it.
	release func()
	// files lists the layer's regular files when its job asked for them
	// (layerJob.files); nil otherwise.
	files *layer.FileList
}

// releaseAll unpins the blobs of layers (nil entries are skipped).
func releaseAll(layers []*builtLayer) {
	for _, l := range layers {
		if l != nil && l.release != nil {
			l.release()
		}
	}
}

// cachedLayer is the metadata record that lets a later build reuse a layer
// produced from the same source bytes with the same options, without
// fetching or encoding it again.
type cachedLayer struct {
	Digest            string         `json:"digest"`
	DiffID            string         `json:"diffID"`
	Size              int64          `json:"size"`
	UncompressedSize  int64          `json:"uncompressedSize"`
	MediaType         string         `json:"mediaType"`
	SourceDigest      string         `json:"sourceDigest"`
	SourceCompression string         `json:"sourceCompression"`
	Entries           int            `json:"entries"`
	Changes           map[string]int `json:"changes,omitempty"`
}

// layerSet is every layer of a build, produced once per distinct
// definition and shaping: a layer shared by several platforms of an index
// is one job, whatever the number of images it goes into.
type layerSet struct {
	// layers are each child's layers, in its order (entries shared).
	layers [][]*builtLayer
	// jobs are the distinct layers (one per definition and shaping), each
	// pinned once: publish mounts and records these.
	jobs               []*builtLayer
	bytesIn            int64
	cacheHits, encoded int
}

func (s *layerSet) release() { releaseAll(s.jobs) }

// layerJob is one distinct layer definition to produce, in one or both
// shapings (Linux, Windows): its source is fetched once for all of them.
type layerJob struct {
	spec   *kilnv1.ImageBuildSpec
	layer  *kilnv1.Layer
	shapes []bool // windows, per shaping
	// platforms that use it (requested names; none for a single image).
	platforms []string
	// files asks for the layer's file list (the SBOM's files), hashed
	// during the normalization pass or taken from the cache (filelists.go).
	files bool
}

// shape returns the index of shaping windows in the job, adding it.
func (j *layerJob) shape(windows bool) int {
	for i, w := range j.shapes {
		if w == windows {
			return i
		}
	}
	j.shapes = append(j.shapes, windows)
	return len(j.shapes) - 1
}

// buildLayerSet produces the layers of every child, at most
// layerParallelism at a time across the whole build. Two children share a
// job when their layer is defined the same (variant resolved) and shaped
// the same (Windows or not): its bytes are fetched and encoded once.
func (e *Engine) buildLayerSet(ctx context.Context, children []child, bases []*image.Base, in Inputs, o registry.Options, files bool, progress func(Progress)) (*layerSet, error) {
	type ref struct{ job, shape int }
	var jobs []*layerJob
	byKey := map[string]int{}
	refs := make([][]ref, len(children))
	for i, c := range children {
		windows := bases[i].Windows() || c.platform.OS == "windows"
		for j := range c.spec.Layers {
			l := &c.spec.Layers[j]
			k := jobKey(l)
			n, ok := byKey[k]
			if !ok {
				n, byKey[k] = len(jobs), len(jobs)
				jobs = append(jobs, &layerJob{spec: c.spec, layer: l, files: files})
			}
			if c.requested != "" {
				jobs[n].platforms = append(jobs[n].platforms, c.requested)
			}
			refs[i] = append(refs[i], ref{n, jobs[n].shape(windows)})
		}
	}
	built := make([][]*builtLayer, len(jobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(layerParallelism)
	for n, jb := range jobs {
		g.Go(func() error {
			bs, err := e.buildLayer(gctx, jb.spec, jb.layer, in, jb.shapes, jb.files, o, progress)
			if err != nil {
				// Source, pipeline and verification errors already carry
				// the layer's name (failure.LayerError); the rest get it.
				return inPlatforms(jb.platforms, failure.InLayer(jb.layer.Name, err))
			}
			built[n] = bs
			return nil
		})
	}
	err := g.Wait()
	set := &layerSet{layers: make([][]*builtLayer, len(children))}
	for _, bs := range built {
		set.jobs = append(set.jobs, bs...)
	}
	if err != nil {
		releaseAll(set.jobs)
		return nil, err
	}
	for i := range children {
		set.layers[i] = make([]*builtLayer, len(refs[i]))
		for j, r := range refs[i] {
			set.layers[i][j] = built[r.job][r.shape]
		}
	}
	for _, b := range set.jobs {
		set.bytesIn += b.bytesIn
		if b.cached {
			set.cacheHits++
		} else {
			set.encoded++
		}
	}
	return set, nil
}

// jobKey identifies a layer's definition (with its variant resolved):
// equal keys read the same source and, shaped alike, produce equal bytes.
func jobKey(l *kilnv1.Layer) string {
	raw, err := json.Marshal(l)
	if err != nil {
		panic(fmt.Sprintf("marshalling a layer: %v", err)) // plain data
	}
	return string(raw)
}

// buildLayer produces layer l once per shaping (windows or not), reading
// its source once for all of them: a shaping whose layer the cache proves
// this build may have is taken from the cache, the others are encoded
// side by side from one fetch.
func (e *Engine) buildLayer(ctx context.Context, spec *kilnv1.ImageBuildSpec, l *kilnv1.Layer, in Inputs, shapes []bool, files bool, o registry.Options, progress func(Progress)) ([]*builtLayer, error) {
	f := e.fetcher(o)
	src, err := e.layerSource(ctx, f, spec, l, in)
	if err != nil {
		return nil, err
	}
	overrides, err := overridesOf(l)
	if err != nil {
		return nil, err
	}
	declared, err := declaredCompression(l)
	if err != nil {
		return nil, err
	}
	bos, opts := make([]layer.BuildOptions, len(shapes)), make([]string, len(shapes))
	for i, windows := range shapes {
		bos[i] = layer.BuildOptions{
			Options: layer.Options{
				Mode: normalizeMode(spec, l), Created: created(spec), Windows: windows,
				Limits: e.Limits, LayerName: l.Name, Overrides: overrides,
			},
			Declared: declared,
			DiffID:   l.DiffID,
			Output:   outputCompression(spec),
		}
		if files {
			bos[i].Files = layer.NewFileList(0)
		}
		opts[i] = optionsKey(bos[i])
	}
	keys := make([]string, len(opts))
	for i := range opts {
		if keys[i], err = flightKey(ctx, f, src, opts[i]); err != nil {
			return nil, err
		}
	}
	flight := strings.Join(keys, "+")
	if files {
		// Same bytes, but only this flight hashes the files: a build
		// without them must not hand its listless result to one that
		// wants them (that one would have to read the blob again).
		flight += "+files"
	}
	v, _, err := e.flights.do(ctx, flight, func() (any, error) {
		return e.obtain(ctx, f, src, bos, opts, progress)
	})
	if err != nil {
		return nil, err
	}
	ps := v.([]produced)
	out := make([]*builtLayer, len(ps))
	for i, p := range ps {
		out[i], err = e.finish(l, p.layer, p.bytesIn, p.cached, p.pin.take(), progress)
		if err == nil && files {
			out[i].files, err = e.fileList(l.Name, p, out[i])
		}
		if err != nil {
			releaseAll(out)
			for _, rest := range ps[i+1:] {
				if r := rest.pin.take(); r != nil {
					r()
				}
			}
			return nil, err
		}
		if r := l.Source.SourceRef; r != nil {
			out[i].status.SourceRevision = in.Artifacts[ArtifactKey(*r)].Revision
		}
	}
	return out, nil
}

// obtain returns the layer for src in each shaping: the cached one once
// src's own identity has proved it may have the bytes (proof.go), else a
// fresh fetch shared by every shaping the cache lacks.
func (e *Engine) obtain(ctx context.Context, f *source.Fetcher, src source.Spec, bos []layer.BuildOptions, opts []string, progress func(Progress)) ([]produced, error) {
	out := make([]produced, len(bos))
	var missing []int
	for i := range bos {
		c, ok, err := e.proveCached(ctx, f, src, opts[i])
		if err != nil {
			return nil, err
		}
		if ok {
			out[i] = produced{layer: c, cached: true}
		} else {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	mb, mo := make([]layer.BuildOptions, len(missing)), make([]string, len(missing))
	for k, i := range missing {
		mb[k], mo[k] = bos[i], opts[i]
	}
	cs := conditionalSource{Spec: src}
	if len(missing) == 1 {
		// Revalidation stands for one previous layer: one shaping only.
		cs = e.conditional(src, mo[0])
	}
	ps, err := e.produce(ctx, f, cs, mb, mo, progress)
	if err != nil {
		return nil, err
	}
	for k, i := range missing {
		out[i] = ps[k]
	}
	return out, nil
}

type produced struct {
	layer   cachedLayer
	bytesIn int64
	cached  bool
	// pin is the pin layer.Build committed a fresh blob under; nil for a
	// cached layer.
	pin *handoff
	// files is the list layer.Build recorded; nil for a cached layer or
	// when none was asked for.
	files *layer.FileList
}

// handoff passes a pin to one owner: the fetch may be shared by concurrent
// builds (flightGroup), and whichever finishes first keeps the fetch's pin
// while the others take their own.
type handoff struct {
	once    sync.Once
	release func()
}

// take returns the pin's release func to the first caller, nil to the rest.
func (h *handoff) take() (release func()) {
	if h == nil {
		return nil
	}
	h.once.Do(func() { release = h.release })
	return release
}

// conditional returns src with cache validators set when an unpinned URL was
// fetched before and the layer it produced is still in the store.
func (e *Engine) conditional(src source.Spec, opts string) conditionalSource {
	cs := conditionalSource{Spec: src}
	if src.URL == "" || src.Digest != "" {
		return cs
	}
	var rec urlRecord
	if ok, err := e.Store.GetMeta(urlKey(src.URL), &rec); err != nil || !ok || rec.Validators.IsZero() {
		return cs
	}
	if c, ok := e.lookup(rec.SourceDigest, opts); ok {
		cs.Validators = rec.Validators
		cs.previous = &c
	}
	return cs
}

// conditionalSource is a source plus the layer its validators stand for.
type conditionalSource struct {
	source.Spec
	previous *cachedLayer
}

// produce fetches and encodes one layer, retrying a stream that broke
// mid-way (the fetcher itself retries only before the first byte). Its
// attempts and the fetcher's request retries share the layer fetch's one
// retry budget (source.Options.Retries), so they do not multiply.
func (e *Engine) produce(ctx context.Context, f *source.Fetcher, src conditionalSource, bos []layer.BuildOptions, opts []string, progress func(Progress)) ([]produced, error) {
	attempts := e.LayerAttempts
	if attempts <= 0 {
		attempts = 3
	}
	ctx = f.WithRetryBudget(ctx)
	var lastErr error
	for a := 0; a < attempts; a++ {
		if a > 0 {
			if !retry.Take(ctx) {
				return nil, fmt.Errorf("%w (gave up after %d attempts of the whole layer: retry budget used up)", lastErr, a)
			}
			if err := retry.Sleep(ctx, time.Duration(a)*time.Second); err != nil {
				return nil, err
			}
		}
		p, err := e.produceOnce(ctx, f, src, bos, opts, progress)
		var open *openError
		if err == nil || failure.IsPermanent(err) || ctx.Err() != nil || errors.As(err, &open) {
			// Opening the source already retried with backoff: only a
			// stream that broke after its first byte is worth another go.
			return p, err
		}
		lastErr = err
	}
	return nil, fmt.Errorf("%w (gave up after %d attempts of the whole layer)", lastErr, attempts)
}

// openError marks a failure to open a source, after the fetcher's own retries.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

func (e *Engine) produceOnce(ctx context.Context, f *source.Fetcher, src conditionalSource, bos []layer.BuildOptions, opts []string, progress func(Progress)) ([]produced, error) {
	stream, err := f.Open(ctx, src.Spec)
	if errors.Is(err, source.ErrNotModified) && src.previous != nil {
		return []produced{{layer: *src.previous, cached: true}}, nil
	}
	if err != nil {
		return nil, &openError{err: err}
	}
	defer func() { _ = stream.Close() }()
	var in io.Reader = stream
	if progress != nil {
		in = &progressReader{r: stream, name: src.Name, report: progress}
	}
	results, err := buildShapes(ctx, in, bos, e.Store)
	if err != nil {
		return nil, err
	}
	out := make([]produced, len(results))
	for i, res := range results {
		c := cachedLayer{
			Digest: res.Digest.String(), DiffID: res.DiffID.String(), Size: res.Size,
			UncompressedSize: res.UncompressedSize, MediaType: string(res.MediaType),
			SourceDigest: stream.Digest().String(), SourceCompression: string(res.SourceCompression),
			Entries: res.Entries, Changes: res.Changes,
		}
		// The record is keyed by the digest of the bytes actually fetched, so a
		// later build that proves it can obtain the same bytes (proof.go) skips
		// the encode. A failed write only costs a future re-encode.
		_ = e.Store.PutMeta(metaKey(c.SourceDigest, opts[i]), c)
		out[i] = produced{layer: c, pin: &handoff{release: res.Release}, files: bos[i].Files}
		if fl := bos[i].Files; fl != nil {
			e.storeFileList(c.DiffID, fl)
		}
	}
	// The bytes were fetched once, whatever the number of shapings.
	out[0].bytesIn = stream.Size()
	e.recordOrigin(src.Spec, stream, out[0].layer.SourceDigest)
	return out, nil
}

// lookup returns a cached layer for source identity id whose blob is still
// in the store.
func (e *Engine) lookup(id, opts string) (cachedLayer, bool) {
	var c cachedLayer
	ok, err := e.Store.GetMeta(metaKey(id, opts), &c)
	if err != nil || !ok {
		return c, false
	}
	d, err := v1.NewHash(c.Digest)
	if err != nil || !e.Store.Has(d) {
		return c, false
	}
	return c, true
}

// finish checks the declared diffID and turns a layer record into an addition.
// held, when set, is the pin layer.Build committed the blob under; finish
// keeps it until the push, or releases it when it fails.
func (e *Engine) finish(l *kilnv1.Layer, c cachedLayer, bytesIn int64, cached bool, held func(), progress func(Progress)) (_ *builtLayer, err error) {
	if held != nil {
		defer func() {
			if err != nil {
				held()
			}
		}()
	}
	if l.DiffID != "" && l.DiffID != c.DiffID {
		return nil, failure.Permanent(failure.DiffIDMismatch, failure.Layerf(l.Name, "uncompressed tar has diffID %s, spec declares %s", c.DiffID, l.DiffID))
	}
	d, err := v1.NewHash(c.Digest)
	if err != nil {
		return nil, failure.Layerf(l.Name, "cached digest: %w", err)
	}
	diffID, err := v1.NewHash(c.DiffID)
	if err != nil {
		return nil, failure.Layerf(l.Name, "cached diffID: %w", err)
	}
	// Pin before checking presence: from here until the push, eviction by
	// a concurrent build must not remove the blob. A blob this build
	// committed has been pinned since its commit.
	release := held
	if release == nil {
		release = e.Store.Pin(d)
	}
	if !e.Store.Has(d) {
		release()
		return nil, failure.Retryable(failure.Layerf(l.Name, "blob %s was evicted from the cache before the push", d), 0)
	}
	if progress != nil {
		progress(Progress{Layer: l.Name, BytesIn: bytesIn, BytesOut: c.Size, Done: true})
	}
	changes := map[string]int64{}
	for k, v := range c.Changes {
		changes[k] = int64(v)
	}
	if len(changes) == 0 {
		changes = nil
	}
	return &builtLayer{
		addition: image.Addition{
			Name: l.Name, SourceKind: sourceKind(l.Source), Digest: d, DiffID: diffID,
			Size: c.Size, MediaType: types.MediaType(c.MediaType), Path: e.Store.Path(d),
		},
		status: kilnv1.LayerStatus{
			Name: l.Name, Digest: c.Digest, DiffID: c.DiffID, Size: c.Size,
			UncompressedSize: c.UncompressedSize, MediaType: c.MediaType,
			SourceDigest: shownSourceDigest(l.Source, c), SourceCompression: c.SourceCompression,
			Entries: int64(c.Entries), Changes: changes,
		},
		input:   inputOf(l.Source, c),
		bytesIn: bytesIn,
		cached:  cached,
		release: release,
	}, nil
}

// shownSourceDigest is status.layers[].sourceDigest: the sha256 of the
// fetched bytes, except for a Secret, where it would let anyone who can read
// the ImageBuild confirm a guess of the secret (and, before the cache
// proofs, it was the key to another tenant's cached copy). A Secret layer
// shows which key it came from instead.
// Generated layers holding Secret values show "secret:<name>/*" (secretDir)
// or "secret:files" instead.
func shownSourceDigest(s *kilnv1.Source, c cachedLayer) string {
	switch {
	case s.Secret != nil:
		return kilnv1.SecretSourceDigestPrefix + s.Secret.Name + "/" + s.Secret.Key
	case s.SecretDir != nil:
		return kilnv1.SecretSourceDigestPrefix + s.SecretDir.Name + "/" + kilnv1.AllKeys
	case s.HoldsSecret():
		return kilnv1.SecretSourceDigestPrefix + kindFiles
	}
	return c.SourceDigest
}

// inputOf is the layer's part of the inputDigest: the source digest, except
// for a source holding Secret values, where the inputDigest must not be a confirmation oracle
// either. There it is the pushed blob digest and diffID: already in the
// status and the image, so the inputDigest reveals nothing more, and still a
// function of the Secret bytes and options that determines the layer (equal
// inputDigests still mean equal images).
func inputOf(s *kilnv1.Source, c cachedLayer) string {
	if s.HoldsSecret() {
		return "secret " + c.Digest + " " + c.DiffID
	}
	return c.SourceDigest
}

// optionsKey names everything besides the source bytes that determines a
// layer's output bytes.
func optionsKey(bo layer.BuildOptions) string {
	return fmt.Sprintf("%s mode=%s windows=%t created=%d out=%s declared=%s%s",
		version.Engine, bo.Mode, bo.Windows, bo.Created.Unix(), bo.Output, compressionOrAuto(bo.Declared), bo.Overrides)
}

func compressionOrAuto(a compression.Algorithm) compression.Algorithm {
	if a == "" {
		return compression.Auto
	}
	return a
}

func metaKey(sourceDigest, opts string) string {
	sum := sha256.Sum256([]byte(sourceDigest + "\x00" + opts))
	return "layer-" + hex.EncodeToString(sum[:])
}

// progressReader reports bytes read from a source.
type progressReader struct {
	r      io.Reader
	name   string
	n      atomic.Int64
	report func(Progress)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	total := p.n.Add(int64(n))
	p.report(Progress{Layer: p.name, BytesIn: total})
	return n, err
}
