package engine

import (
	"context"
	"errors"
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/iox"
	"github.com/kiln-build/kiln/internal/layer"
)

// buildShapes runs one layer.Build per shaping over the same input, read
// once: a layer that a Linux and a Windows platform share is fetched once
// and encoded twice, side by side. With one shaping it is layer.Build.
// When any shaping fails, nothing is returned and every blob committed by
// the others is released.
func buildShapes(ctx context.Context, in io.Reader, bos []layer.BuildOptions, store *blobstore.Store) ([]layer.Result, error) {
	if len(bos) == 1 {
		r, err := layer.Build(ctx, in, bos[0], store)
		if err != nil {
			return nil, err
		}
		return []layer.Result{r}, nil
	}
	results := make([]layer.Result, len(bos))
	readers := make([]*io.PipeReader, len(bos))
	writers := make([]*io.PipeWriter, len(bos))
	for i := range bos {
		readers[i], writers[i] = io.Pipe()
	}
	g, gctx := errgroup.WithContext(ctx)
	for i := range bos {
		g.Go(func() error {
			r, err := layer.Build(gctx, readers[i], bos[i], store)
			// A pipeline that is done, well or badly, reads no more: the
			// fan-out drops it and keeps feeding the others.
			readers[i].CloseWithError(errShapeDone)
			results[i] = r
			return err
		})
	}
	g.Go(func() error {
		err := fanOut(gctx, in, writers)
		for _, w := range writers {
			w.CloseWithError(err) // nil: the readers see EOF
		}
		return err
	})
	if err := g.Wait(); err != nil {
		for _, r := range results {
			if r.Release != nil {
				r.Release()
			}
		}
		return nil, err
	}
	return results, nil
}

// errShapeDone closes the read side of a pipeline that returned.
var errShapeDone = errors.New("layer pipeline finished")

// fanOut copies r to every writer until r ends or no writer is left. A
// writer whose reader went away (its pipeline finished, or failed) is
// dropped; io.MultiWriter would stop the copy for all of them instead, so
// that one pipeline ending before the input's trailing bytes (tar padding
// after the end marker) would cut the others short.
func fanOut(ctx context.Context, r io.Reader, ws []*io.PipeWriter) error {
	live := append([]*io.PipeWriter(nil), ws...)
	buf := make([]byte, 256<<10)
	for len(live) > 0 {
		n, err := r.Read(buf)
		if n > 0 {
			kept := live[:0]
			for _, w := range live {
				if _, werr := w.Write(buf[:n]); werr == nil {
					kept = append(kept, w)
				}
			}
			live = kept
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	// Every pipeline returned before the end of the input. When one failed
	// (the group's context is cancelled) the build is over: stop reading.
	// Otherwise drain it, so that the source's own digest and size checks
	// still see every byte.
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := io.CopyBuffer(io.Discard, iox.ContextReader(ctx, r), buf)
	return err
}
