package layer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/iox"
)

// inputBuffer is the read buffer in front of the fetched bytes; detection
// peeks into it and decoders read through it.
const inputBuffer = 1 << 20

// BuildOptions configures Build.
type BuildOptions struct {
	Options
	// Declared is the compression the spec claims (Auto or "" to detect).
	Declared compression.Algorithm
	// DiffID, when set ("sha256:<hex>"), pins the uncompressed tar.
	DiffID string
	// Output is the blob compression: Gzip (default) or Zstd.
	Output compression.Algorithm
}

// Result describes a stored layer blob.
type Result struct {
	Digest, DiffID v1.Hash
	// Size is the blob size; UncompressedSize the tar's.
	Size, UncompressedSize int64
	// MediaType is the OCI layer media type (the image assembly converts
	// to Docker types when the base needs them).
	MediaType         types.MediaType
	SourceCompression compression.Algorithm
	Entries           int
	Changes           map[string]int
	// Release unpins the blob. Build commits it pinned (CommitAndPin), so
	// that eviction, which a full cache runs on every commit, cannot remove
	// it before the caller has used it; call Release once the blob is pushed
	// or no longer needed. It may be called more than once.
	Release func()
}

// Build reads a fetched layer (compressed or not), normalizes it and stores
// it as a blob in store, in one streaming pass: decode, normalize + DiffID,
// encode + digest run as concurrent stages.
//
// When the input already has the output compression (gzip, or zstd for zstd
// output) and normalization changes no byte, the input bytes themselves
// become the blob. The blob stays pinned until Result.Release. On any error
// nothing is committed and every temp file is removed.
func Build(ctx context.Context, in io.Reader, opts BuildOptions, store *blobstore.Store) (Result, error) {
	b, err := newBuilder(ctx, in, opts, store)
	if err != nil {
		return Result{}, err
	}
	alg, err := compression.Detect(b.br)
	if err != nil {
		return Result{}, b.wrap(err)
	}
	if err := compression.Check(opts.Declared, alg); err != nil {
		return Result{}, b.wrap(err)
	}
	b.res.SourceCompression = alg
	if alg == compression.Xz && xzBlocksCarrySizes(b.br) {
		return b.res, b.encodeSpooledXz()
	}
	input := io.Reader(b.br)
	if alg == b.output && (alg == compression.Gzip || alg == compression.Zstd) {
		done, rest, cleanup, err := b.fastPath(alg)
		defer cleanup()
		if err != nil || done {
			return b.res, err
		}
		input = rest
	}
	return b.res, b.encode(alg, input)
}

type builder struct {
	ctx      context.Context
	opts     BuildOptions
	store    *blobstore.Store
	in       *iox.Reader
	br       *bufio.Reader
	output   compression.Algorithm
	wantDiff v1.Hash
	res      Result
}

func newBuilder(ctx context.Context, in io.Reader, opts BuildOptions, store *blobstore.Store) (*builder, error) {
	// b.in counts the fetched bytes, for the ratio limit.
	b := &builder{ctx: ctx, opts: opts, store: store, in: iox.NewReader(iox.ContextReader(ctx, in))}
	b.br = bufio.NewReaderSize(b.in, inputBuffer)
	if err := opts.Options.validate(); err != nil {
		return nil, b.wrap(failure.Permanent(failure.InvalidSpec, err))
	}
	switch opts.Output {
	case "", compression.Gzip:
		b.output, b.res.MediaType = compression.Gzip, types.OCILayer
	case compression.Zstd:
		b.output, b.res.MediaType = compression.Zstd, types.OCILayerZStd
	default:
		return nil, b.wrap(failure.Permanentf(failure.InvalidSpec,
			"output compression %q is not supported (want gzip or zstd)", opts.Output))
	}
	if opts.DiffID != "" {
		h, err := v1.NewHash(opts.DiffID)
		if err != nil {
			return nil, b.wrap(failure.Permanentf(failure.InvalidSpec, "declared diffID %q: %v", opts.DiffID, err))
		}
		b.wantDiff = h
	}
	return b, nil
}

// wrap names the layer in err (see named).
func (b *builder) wrap(err error) error { return named(b.opts.LayerName, err) }

func (b *builder) normalizeOptions() Options {
	o := b.opts.Options
	o.CompressedBytes = b.in.Count
	return o
}

// fastPath decodes and checks the input while spooling its compressed bytes
// into a blob writer. When nothing changes the spool is committed as the
// blob (done). Otherwise rest replays the input from its start (the spool,
// then the unread remainder) for the encode path; cleanup removes the spool.
func (b *builder) fastPath(alg compression.Algorithm) (done bool, rest io.Reader, cleanup func(), err error) {
	cleanup = func() {}
	spool, err := b.store.NewWriter()
	if err != nil {
		return false, nil, cleanup, err
	}
	cleanup = func() { spool.Abort() }
	diff := sha256.New()
	opts := b.normalizeOptions()
	opts.stopOnChange = true
	st, err := b.run(alg, io.TeeReader(b.br, spool), diff, opts)
	if errors.Is(err, errChanged) {
		f, err := os.Open(spool.TempPath())
		if err != nil {
			return false, nil, cleanup, fmt.Errorf("re-reading the spooled layer: %w", err)
		}
		cleanup = func() { f.Close(); spool.Abort() }
		return false, io.MultiReader(f, b.br), cleanup, nil
	}
	if err != nil {
		return false, nil, cleanup, err
	}
	// The decoder stopped at the end of its stream; keep anything after it
	// (normally nothing) so that the blob is exactly the input.
	if _, err := io.Copy(spool, b.br); err != nil {
		return false, nil, cleanup, b.wrap(fmt.Errorf("spooling the layer: %w", err))
	}
	if err := b.finishDiffID(diff, st); err != nil {
		return false, nil, cleanup, err
	}
	digest, release, err := spool.CommitAndPin(v1.Hash{})
	if err != nil {
		return false, nil, cleanup, b.wrap(err)
	}
	b.res.Digest, b.res.Size, b.res.Release = digest, spool.Size(), release
	return true, nil, cleanup, nil
}

// encode runs decode | normalize + DiffID + encode and commits the blob.
// The encoders are parallel themselves (gzip blocks, zstd frames are
// compressed by worker goroutines, the blob hashed and written by the
// emitter), so the normalizer feeds them directly: a pipe in between would
// only add a copy.
func (b *builder) encode(alg compression.Algorithm, input io.Reader) error {
	w, err := b.store.NewWriter()
	if err != nil {
		return b.wrap(err)
	}
	defer w.Abort() // no-op after Commit
	enc, err := compression.NewWriter(w, b.output)
	if err != nil {
		return b.wrap(err)
	}
	diff := sha256.New()
	st, nerr := b.run(alg, input, io.MultiWriter(diff, enc), b.normalizeOptions())
	eerr := enc.Close() // always: it releases the encoder's goroutines
	switch {
	case nerr != nil:
		return nerr
	case eerr != nil:
		return b.wrap(fmt.Errorf("encoding %s: %w", b.output, eerr))
	}
	if err := b.finishDiffID(diff, st); err != nil {
		return err
	}
	digest, release, err := w.CommitAndPin(v1.Hash{})
	if err != nil {
		return b.wrap(err)
	}
	b.res.Digest, b.res.Size, b.res.Release = digest, w.Size(), release
	return nil
}

// xzBlocksCarrySizes peeks at the first xz block header: multi-threaded
// encoders (xz -T, pixz) record each block's sizes there because they cut
// the stream into independent blocks, which can be decoded in parallel.
// Single-threaded xz leaves them out and writes one block.
func xzBlocksCarrySizes(br *bufio.Reader) bool {
	const streamHeader = 12
	h, err := br.Peek(streamHeader + 2)
	if err != nil || h[streamHeader] == 0 { // 0: an index, no block at all
		return false
	}
	const compressedSize, uncompressedSize = 0x40, 0x80
	return h[streamHeader+1]&(compressedSize|uncompressedSize) == compressedSize|uncompressedSize
}

// encodeSpooledXz spools a multi-block xz input to local disk and decodes
// its blocks concurrently. ulikunitz/xz decodes ~25 MB/s on one core; xz is
// the one input where the decoder, not the network or the encoder, bounds
// the pipeline, so reading the fetched bytes once more from local disk buys
// a decoder per core. The spool is removed when the layer is done.
func (b *builder) encodeSpooledXz() error {
	spool, err := b.store.NewWriter()
	if err != nil {
		return b.wrap(err)
	}
	defer spool.Abort()
	if _, err := io.Copy(spool, b.br); err != nil {
		return b.wrap(fmt.Errorf("spooling the xz layer: %w", err))
	}
	f, err := os.Open(spool.TempPath())
	if err != nil {
		return b.wrap(fmt.Errorf("re-reading the spooled xz layer: %w", err))
	}
	defer f.Close()
	dec, err := compression.NewParallelXzReader(f, spool.Size(), b.opts.Limits.ReaderOptions())
	if err != nil {
		return b.wrap(err)
	}
	defer dec.Close()
	return b.encode(compression.None, iox.ContextReader(b.ctx, dec))
}

// run decodes src in its own goroutine and normalizes the result into dst.
// An uncompressed src is normalized directly.
func (b *builder) run(alg compression.Algorithm, src io.Reader, dst io.Writer, opts Options) (Stats, error) {
	if alg == compression.None {
		return b.normalize(dst, src, opts)
	}
	dec, err := compression.NewReader(src, alg, b.opts.Limits.ReaderOptions())
	if err != nil {
		return Stats{}, b.wrap(err)
	}
	pr, pw := io.Pipe()
	decDone := make(chan struct{})
	go func() {
		defer close(decDone)
		buf := make([]byte, ioBuffer)
		_, err := io.CopyBuffer(pw, dec, buf)
		dec.Close()
		pw.CloseWithError(err)
	}()
	st, err := b.normalize(dst, pr, opts)
	// Stop the decoder and wait for it: after run returns, nobody else
	// reads src.
	pr.CloseWithError(errStopped)
	<-decDone
	return st, err
}

func (b *builder) normalize(dst io.Writer, src io.Reader, opts Options) (Stats, error) {
	st, err := Normalize(dst, src, opts)
	if err == nil && b.ctx.Err() != nil {
		err = b.wrap(b.ctx.Err())
	}
	// Normalize's own errors already name the layer.
	return st, err
}

var errStopped = errors.New("layer: pipeline stopped")

func (b *builder) finishDiffID(h hash.Hash, st Stats) error {
	diffID := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	if b.wantDiff != (v1.Hash{}) && b.wantDiff != diffID {
		return b.wrap(failure.Permanentf(failure.DiffIDMismatch,
			"diffID mismatch: declared %s, but the uncompressed tar is %s", b.wantDiff, diffID))
	}
	b.res.DiffID = diffID
	b.res.UncompressedSize = st.Size
	b.res.Entries = st.Entries
	b.res.Changes = st.Changes
	return nil
}
