package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/retry"
)

// PushReferrers attaches artifacts (signatures, attestations: images whose
// manifest has a subject) to subject, a "repo@sha256:<hex>" reference, and
// returns how many it wrote. An artifact the subject's referrers already
// list (by manifest digest) is skipped, so an unchanged re-run writes
// nothing: one referrers listing, no PUT.
//
// Listing uses the OCI 1.1 referrers API, or, on a registry without one
// (the CNCF distribution registry), the referrers tag schema: the index
// tagged sha256-<hex> in the subject's repository. Writing maintains that
// index too: go-containerregistry v0.22 does it in the manifest PUT of any
// manifest with a subject (remote/write.go commitSubjectReferrers): it asks
// the referrers API first and, when the registry has none, reads the
// fallback index, appends the new descriptor unless present, keeping every
// entry others put there, sorts by digest and PUTs it back. It does so
// whether or not the registry answered with OCI-Subject, and without
// conditional requests: two writers racing on one subject's index can lose
// an entry; the loser's next run sees it missing and writes it again.
//
// Every artifact must name subject as its subject; the rest is the same
// as Push: o's transport, host policy, credentials and retry budget.
// Errors are classified like Push's, except that a registry rejecting a
// referrer (PushRejected) is transient: the image is pushed, and whether a
// registry takes the artifact manifest can change (an upgrade, a proxy),
// so the caller retries rather than stall.
func PushReferrers(ctx context.Context, subject string, artifacts []v1.Image, o Options) (written int, err error) {
	what := "referrers of " + subject
	ref, err := ParseReference(subject, o)
	if err != nil {
		return 0, err
	}
	sub, ok := ref.(name.Digest)
	if !ok {
		return 0, failure.Permanentf(failure.InvalidSpec, "%s: the subject must be a reference by digest", what)
	}
	digests := make([]v1.Hash, len(artifacts))
	for i, a := range artifacts {
		if digests[i], err = checkSubject(a, sub); err != nil {
			return 0, failure.Permanentf(failure.InvalidSpec, "%s: artifact %d: %v", what, i, err)
		}
	}
	// Per artifact: its blobs, its manifest and the fallback index (a GET
	// and a PUT); plus the listing and the pings.
	ctx = retry.WithBudget(ctx, o.retries()*(3*len(artifacts)+1))
	ropts := remoteOptions(ctx, o, &stats{})
	pusher, err := remote.NewPusher(ropts...)
	if err != nil {
		return 0, referrerError(err, what)
	}
	listed, err := referrers(sub, ropts)
	if err != nil {
		return 0, referrerError(fmt.Errorf("listing: %w", err), what)
	}
	for i, a := range artifacts {
		if listed[digests[i]] {
			continue
		}
		if err := putReferrer(ctx, pusher, sub.Context().Digest(digests[i].String()), a); err != nil {
			return written, referrerError(fmt.Errorf("artifact %s: %w", digests[i], err), what)
		}
		listed[digests[i]] = true // the same artifact twice in one call
		written++
	}
	return written, nil
}

// referrers returns the manifest digests subject's referrers list.
func referrers(sub name.Digest, ropts []remote.Option) (map[v1.Hash]bool, error) {
	idx, err := remote.Referrers(sub, ropts...)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	out := map[v1.Hash]bool{}
	for _, d := range im.Manifests {
		out[d.Digest] = true
	}
	return out, nil
}

// putReferrer writes one artifact: its blobs (a HEAD each, uploaded when
// missing), then its manifest by digest, always. go-containerregistry's
// Push would skip the manifest PUT when the registry already holds the
// manifest, and with it the fallback index update that rides on that PUT:
// an artifact whose earlier index update failed (or was lost to a race)
// would then never be listed. Listing said it is not, so it is PUT again.
func putReferrer(ctx context.Context, pusher *remote.Pusher, ref name.Digest, img v1.Image) error {
	if err := uploadBlobs(ctx, pusher, ref.Context(), img); err != nil {
		return err
	}
	return pusher.Put(ctx, ref, img)
}

// checkSubject returns a's manifest digest, and an error unless its
// manifest names sub as its subject.
func checkSubject(a v1.Image, sub name.Digest) (v1.Hash, error) {
	m, err := a.Manifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("reading its manifest: %w", err)
	}
	if m.Subject == nil || m.Subject.Digest.String() != sub.DigestStr() {
		return v1.Hash{}, fmt.Errorf("its manifest does not name %s as its subject", sub.DigestStr())
	}
	return a.Digest()
}

// referrerError classifies err like Push's errors, except that a
// rejection is transient (see PushReferrers).
func referrerError(err error, what string) error {
	err = Classify(err, AccessTarget, what)
	var fe *failure.Error
	if errors.As(err, &fe) && fe.Reason == failure.PushRejected && fe.Permanent {
		return &failure.Error{Reason: failure.PushRejected, Err: err}
	}
	return err
}
