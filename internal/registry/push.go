package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/retry"
)

// PushResult is what Push did.
type PushResult struct {
	// Digest is the manifest digest the registry reports for target: the
	// Docker-Content-Digest of the manifest PUT, or of a HEAD of target
	// when the PUT's response had none (or when nothing was written). Push
	// fails when it differs from the image's own.
	Digest        v1.Hash
	Image         string   // repo@sha256:...
	UpToDate      bool     // the target already held Digest: no blob or manifest was written
	Tags          []string // tags pointing at Digest: target.image's tag, then each extra tag
	BlobsUploaded int      // blobs actually uploaded (not counting existing or mounted ones)
	BytesUploaded int64
}

// Push makes target (and each extra tag of its repository) point at img.
//
// When target already resolves to img's digest (one HEAD) nothing is written
// and only extra tags that do not point at it yet are moved, so an unchanged
// rebuild makes no PUT at all. Otherwise missing blobs are uploaded (HEAD
// check per blob; layers of a base from the same registry are mounted), then
// the manifest is put under target (its tag, or its digest), then under each
// extra tag that does not point at it yet: one manifest PUT per tag.
//
// Every manifest PUT is checked against the digest the registry reports
// for it (confirm): on a mismatch Push fails with PushRejected before moving
// any further tag. The target's own tag was written by the PUT whose answer
// disagrees; avoiding that would cost a PUT by digest on every push.
//
// Retries: every request of the push and go-containerregistry's restarts of
// whole blob uploads draw from one budget (pushBudget).
//
// img is a v1.Image or a v1.ImageIndex: for an index every child's blobs
// and manifest (by digest) are written before the index, so the index is
// never visible before the images it lists.
func Push(ctx context.Context, img Artifact, target string, tags []string, o Options) (*PushResult, error) {
	what := "target " + target
	ref, err := ParseReference(target, o)
	if err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, failure.Permanentf(failure.InvalidSpec, "%s: computing the image digest: %v", what, err)
	}
	if dr, ok := ref.(name.Digest); ok && dr.DigestStr() != d.String() {
		return nil, failure.Permanentf(failure.InvalidSpec,
			"%s pins digest %s but the built image is %s", what, dr.DigestStr(), d)
	}
	tagRefs, err := tagsOf(ref, tags, o)
	if err != nil {
		return nil, err
	}

	ctx = retry.WithBudget(ctx, pushBudget(img, ref, tagRefs, o))
	st := &stats{}
	ropts := remoteOptions(ctx, o, st)
	pusher, err := remote.NewPusher(ropts...)
	if err != nil {
		return nil, Classify(err, AccessTarget, what)
	}
	puller, err := remote.NewPuller(ropts...)
	if err != nil {
		return nil, Classify(err, AccessTarget, what)
	}

	res := &PushResult{Digest: d, Image: ref.Context().Digest(d.String()).String()}
	res.UpToDate, err = pointsAt(ctx, puller, ref, d)
	if err != nil {
		return nil, Classify(err, AccessTarget, what)
	}
	if res.UpToDate && o.Force {
		if err := rewrite(ctx, pusher, ref, img); err != nil {
			return nil, Classify(err, AccessTarget, what)
		}
		res.UpToDate = false
		if res.Digest, err = confirm(ctx, puller, st, ref, d); err != nil {
			return nil, Classify(err, AccessTarget, what)
		}
	} else if !res.UpToDate {
		// Blobs, then the manifest under target's own tag or digest: a tag
		// PUT also makes the manifest reachable by digest, so a tag target
		// costs exactly one manifest PUT.
		if err := pusher.Push(ctx, ref, withMounts(img, ref, o)); err != nil {
			return nil, Classify(err, AccessTarget, what)
		}
		if res.Digest, err = confirm(ctx, puller, st, ref, d); err != nil {
			return nil, Classify(err, AccessTarget, what)
		}
	}
	for _, t := range tagRefs {
		if err := moveTag(ctx, pusher, puller, st, t, ref, res, img); err != nil {
			return nil, Classify(err, AccessTarget, "target tag "+t.String())
		}
		res.Tags = append(res.Tags, t.TagStr())
	}
	res.BlobsUploaded = int(st.blobs.Load())
	res.BytesUploaded = st.bytes.Load()
	return res, nil
}

// Artifact is what Push writes: a v1.Image or a v1.ImageIndex of images.
type Artifact interface {
	remote.Taggable
	Digest() (v1.Hash, error)
}

// images returns the images an artifact consists of: itself, or an
// index's children in order.
func images(a Artifact) ([]v1.Image, error) {
	switch t := a.(type) {
	case v1.Image:
		return []v1.Image{t}, nil
	case v1.ImageIndex:
		im, err := t.IndexManifest()
		if err != nil {
			return nil, err
		}
		out := make([]v1.Image, 0, len(im.Manifests))
		for _, d := range im.Manifests {
			img, err := t.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("index child %s: %w", d.Digest, err)
			}
			out = append(out, img)
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot push a %T: not an image or an image index", a)
}

// rewrite pushes img to ref although ref already resolves to it (Force):
// every blob the registry lost is uploaded again (a HEAD each, as a push
// does), an index's children are PUT by digest, and the manifest is PUT
// once more, which go-containerregistry's Push would skip.
func rewrite(ctx context.Context, pusher *remote.Pusher, ref name.Reference, a Artifact) error {
	imgs, err := images(a)
	if err != nil {
		return err
	}
	for _, img := range imgs {
		if err := uploadBlobs(ctx, pusher, ref.Context(), img); err != nil {
			return err
		}
		if _, isIndex := a.(v1.ImageIndex); isIndex {
			d, err := img.Digest()
			if err != nil {
				return err
			}
			if err := pusher.Put(ctx, ref.Context().Digest(d.String()), img); err != nil {
				return err
			}
		}
	}
	return pusher.Put(ctx, ref, a)
}

// uploadBlobs uploads img's layers and config to repo, each only when a
// HEAD does not find it there.
func uploadBlobs(ctx context.Context, pusher *remote.Pusher, repo name.Repository, img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	cfg, err := partial.ConfigLayer(img)
	if err != nil {
		return err
	}
	for _, l := range append(layers, cfg) {
		if err := pusher.Upload(ctx, repo, l); err != nil {
			return err
		}
	}
	return nil
}

// pushBudget is the retry budget of one push, shared by all its requests
// (retryTransport) and go-containerregistry's restarts of whole blob uploads
// (budgeted): Retries for each blob (layers and config) and each manifest
// PUT (target and tags), plus Retries for the rest (ping, token, HEADs). So
// a push makes at most that many retries in total, while no single request
// retries more than Retries times. A 3-layer image pushed to a tag with one
// extra tag, default 5 retries: 5 × (4 blobs + 2 manifests + 1) = 35.
func pushBudget(a Artifact, ref name.Reference, tags []name.Tag, o Options) int {
	blobs, manifests := 0, len(tags)
	imgs, _ := images(a)
	for _, img := range imgs {
		blobs++ // the config
		if ls, err := img.Layers(); err == nil {
			blobs += len(ls)
		}
	}
	if isIndex(a) {
		manifests += len(imgs) // each child by digest
	}
	if _, ok := ref.(name.Tag); !ok {
		manifests++ // the PUT by digest
	}
	return o.retries() * (blobs + manifests + 1)
}

// confirm returns the digest the registry reports for the manifest just PUT
// under ref, and a PushRejected error when it is not d: the registry stored
// something else than kiln built (a proxy rewriting manifests, a registry
// converting media types), and nothing more may point at it. The digest is
// the PUT's Docker-Content-Digest; a registry that sends none is asked with
// a HEAD of ref, the same request Push already relies on to skip an
// unchanged image.
func confirm(ctx context.Context, puller *remote.Puller, st *stats, ref name.Reference, d v1.Hash) (v1.Hash, error) {
	got, err := reportedDigest(ctx, puller, st, ref)
	if err != nil {
		return v1.Hash{}, err
	}
	if got != d {
		return got, failure.Permanentf(failure.PushRejected,
			"registry reports digest %s for the pushed manifest, kiln computed %s", got, d)
	}
	return got, nil
}

func reportedDigest(ctx context.Context, puller *remote.Puller, st *stats, ref name.Reference) (v1.Hash, error) {
	path := "/v2/" + ref.Context().RepositoryStr() + "/manifests/" + ref.Identifier()
	if h := st.reported(path); h != "" {
		got, err := v1.NewHash(h)
		if err != nil {
			return v1.Hash{}, failure.Permanentf(failure.PushRejected,
				"the registry answered the manifest PUT with an invalid Docker-Content-Digest %q: %v", h, err)
		}
		return got, nil
	}
	desc, err := puller.Head(ctx, ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("confirming the pushed manifest: %w", err)
	}
	return desc.Digest, nil
}

// moveTag makes t point at the image unless it already does. The target's
// own tag was either up to date or written by the push itself.
func moveTag(ctx context.Context, pusher *remote.Pusher, puller *remote.Puller, st *stats, t name.Tag, target name.Reference, res *PushResult, img Artifact) error {
	if t.String() == target.String() {
		return nil
	}
	if ok, err := pointsAt(ctx, puller, t, res.Digest); err != nil || ok {
		return err
	}
	if err := pusher.Put(ctx, t, img); err != nil {
		return err
	}
	_, err := confirm(ctx, puller, st, t, res.Digest)
	return err
}

// tagsOf returns the tags Push must set: the target's own tag (when it is a
// tag) and each extra tag of the same repository, without duplicates.
func tagsOf(ref name.Reference, extra []string, o Options) ([]name.Tag, error) {
	var out []name.Tag
	seen := map[string]bool{}
	add := func(t name.Tag) {
		if !seen[t.String()] {
			seen[t.String()] = true
			out = append(out, t)
		}
	}
	if t, ok := ref.(name.Tag); ok {
		add(t)
	}
	for _, s := range extra {
		t, err := name.NewTag(ref.Context().Name()+":"+s, nameOptions(o)...)
		if err != nil || t.TagStr() != s {
			return nil, failure.Permanentf(failure.InvalidSpec,
				"target tag %q is not a valid tag (letters, digits, _ . -, at most 128 characters)", s)
		}
		add(t)
	}
	return out, nil
}

// pointsAt reports whether ref currently resolves to d, with one HEAD. A
// missing manifest (404, and 403 from registries that hide existence) is
// "no".
func pointsAt(ctx context.Context, puller *remote.Puller, ref name.Reference, d v1.Hash) (bool, error) {
	desc, err := puller.Head(ctx, ref)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || te.StatusCode == http.StatusForbidden) {
			return false, nil
		}
		return false, err
	}
	return desc.Digest == d, nil
}

// Exists reports whether ref resolves to digest d, with a HEAD request only.
func Exists(ctx context.Context, ref string, d v1.Hash, o Options) (bool, error) {
	r, err := ParseReference(ref, o)
	if err != nil {
		return false, err
	}
	// One chain: ping, token and HEAD share Retries retries.
	ctx = retry.WithBudget(ctx, o.retries())
	puller, err := remote.NewPuller(RemoteOptions(ctx, o)...)
	if err != nil {
		return false, Classify(err, AccessTarget, "target "+ref)
	}
	ok, err := pointsAt(ctx, puller, r, d)
	if err != nil {
		return false, Classify(err, AccessTarget, "target "+ref)
	}
	return ok, nil
}

// withMounts wraps the layers of img that Options.MountFrom places in
// another repository of ref's registry, so that go-containerregistry mounts
// them (one cross-repository POST) instead of uploading them. The manifest
// and digest do not change: only how the blobs get there.
func withMounts(a Artifact, ref name.Reference, o Options) Artifact {
	if len(o.MountFrom) == 0 {
		return a
	}
	switch t := a.(type) {
	case v1.Image:
		return &mountingImage{Image: t, target: ref.Context(), o: o}
	case v1.ImageIndex:
		return &mountingIndex{imageIndex: t, target: ref.Context(), o: o}
	}
	return a
}

func isIndex(a Artifact) bool {
	_, ok := a.(v1.ImageIndex)
	return ok
}

// imageIndex names the embedded index of mountingIndex: embedded as
// v1.ImageIndex, the field would be called ImageIndex and hide the
// interface's ImageIndex method, so *mountingIndex would not be an index.
type imageIndex = v1.ImageIndex

// mountingIndex hands out its children wrapped by withMounts, which is how
// go-containerregistry's Push reaches them.
type mountingIndex struct {
	imageIndex
	target name.Repository
	o      Options
}

func (m *mountingIndex) Image(d v1.Hash) (v1.Image, error) {
	img, err := m.imageIndex.Image(d)
	if err != nil {
		return nil, err
	}
	return &mountingImage{Image: img, target: m.target, o: m.o}, nil
}

type mountingImage struct {
	v1.Image
	target name.Repository
	o      Options
}

func (m *mountingImage) Layers() ([]v1.Layer, error) {
	ls, err := m.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = m.mountable(l)
	}
	return out, nil
}

func (m *mountingImage) LayerByDigest(d v1.Hash) (v1.Layer, error) {
	l, err := m.Image.LayerByDigest(d)
	if err != nil {
		return nil, err
	}
	return m.mountable(l), nil
}

// mountable returns l wrapped for a mount when its blob is known to be in
// another repository of the same registry; l itself otherwise.
func (m *mountingImage) mountable(l v1.Layer) v1.Layer {
	if _, ok := l.(*remote.MountableLayer); ok {
		return l // a remote base layer already knows where it lives
	}
	d, err := l.Digest()
	if err != nil {
		return l
	}
	from, ok := m.o.MountFrom[d]
	if !ok {
		return l
	}
	repo, err := name.NewRepository(from, nameOptions(m.o)...)
	if err != nil || repo.RegistryStr() != m.target.RegistryStr() || repo.RepositoryStr() == m.target.RepositoryStr() {
		return l
	}
	return &remote.MountableLayer{Layer: l, Reference: repo.Digest(d.String())}
}
