package engine

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/registry"
)

// CheckTimeout bounds each registry check of the controller (TargetHolds,
// ResolveBase). They run on reconciles of objects that are already built,
// so a slow registry must not hold a worker the way a build may: a check
// that fails is simply made again at the next reconcile or poll.
const CheckTimeout = 10 * time.Second

// checkRetries is the per-request retry budget of a check: one retry rides
// out a blip, where a build's default (registry.Options) would back off for
// up to a minute.
const checkRetries = 1

// BaseRef is what a tag base resolves to now.
type BaseRef struct {
	// Image is spec.base.image.
	Image string
	// Digest is what the reference resolves to: for a multi-platform base
	// the index, the value status.base.refDigest records.
	Digest string
}

// TargetHolds reports whether spec.target.image still points at digest,
// with one HEAD request. A digest that does not parse is not held: a
// corrupt status digest is rebuilt.
func (e *Engine) TargetHolds(ctx context.Context, spec *kilnv1.ImageBuildSpec, in Inputs, digest string) (bool, error) {
	h, err := v1.NewHash(digest)
	if err != nil {
		return false, nil
	}
	o, err := e.checkOptions(spec, in)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
	defer cancel()
	held, err := registry.Exists(ctx, spec.Target.Image, h, o)
	if err != nil {
		return false, fmt.Errorf("checking that %s still holds %s: %w", spec.Target.Image, h, err)
	}
	return held, nil
}

// ResolveBase resolves a tag base (TagBase) with one HEAD request, for
// drift polling: the result compares with status.base.refDigest. Any other
// base has nothing to poll and gives the zero BaseRef. A build never calls
// it: the build's own resolution records the digest it built from.
func (e *Engine) ResolveBase(ctx context.Context, spec *kilnv1.ImageBuildSpec, in Inputs) (BaseRef, error) {
	ref := TagBase(spec)
	if ref == "" {
		return BaseRef{}, nil
	}
	o, err := e.checkOptions(spec, in)
	if err != nil {
		return BaseRef{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
	defer cancel()
	h, err := image.HeadDigest(ctx, ref, registry.RemoteOptions(ctx, baseOptions(o))...)
	if err != nil {
		return BaseRef{}, err
	}
	return BaseRef{Image: ref, Digest: h.String()}, nil
}

// checkOptions are the build's registry options with the check's small
// retry budget.
func (e *Engine) checkOptions(spec *kilnv1.ImageBuildSpec, in Inputs) (registry.Options, error) {
	o, err := e.registryOptions(spec, in)
	if err != nil {
		return o, err
	}
	o.Retries = checkRetries
	return o, nil
}
