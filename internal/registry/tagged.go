package registry

import (
	"context"
	"errors"
	"net/http"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kiln-build/kiln/internal/retry"
)

// UpdateTag makes tag (a full reference, e.g. r/app:sha256-<hex>.sig) hold
// what update returns for its current image (nil when the tag does not
// exist yet). It writes nothing when update's image has the digest the tag
// already holds, so that re-running a build costs one GET. This is how
// cosign's legacy .sig/.att tags are kept: update merges kiln's layer into
// what others put there instead of replacing it.
//
// A concurrent writer of the same tag can still lose its entry between the
// GET and the PUT; the registry API offers no compare-and-swap, and cosign
// itself has the same race.
func UpdateTag(ctx context.Context, tag string, update func(existing v1.Image) (v1.Image, error), o Options) (written bool, digest v1.Hash, err error) {
	what := "tag " + tag
	ref, err := ParseReference(tag, o)
	if err != nil {
		return false, v1.Hash{}, err
	}
	// One budget for the GET, the blob uploads and the manifest PUT.
	ctx = retry.WithBudget(ctx, 16*o.retries())
	ropts := remoteOptions(ctx, o, &stats{})
	var existing v1.Image
	img, err := remote.Image(ref, ropts...)
	switch {
	case err == nil:
		existing = img
	case !isNotFound(err):
		return false, v1.Hash{}, Classify(err, AccessTarget, what)
	}
	next, err := update(existing)
	if err != nil {
		return false, v1.Hash{}, err
	}
	digest, err = next.Digest()
	if err != nil {
		return false, v1.Hash{}, err
	}
	if existing != nil {
		if cur, err := existing.Digest(); err == nil && cur == digest {
			return false, digest, nil
		}
	}
	if err := remote.Write(ref, next, ropts...); err != nil {
		return false, v1.Hash{}, Classify(err, AccessTarget, what)
	}
	return true, digest, nil
}

// isNotFound reports a 404 or a MANIFEST_UNKNOWN/NAME_UNKNOWN answer.
func isNotFound(err error) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	return te.StatusCode == http.StatusNotFound ||
		hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode)
}
