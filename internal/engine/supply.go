package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/attest"
	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/signing"
	"github.com/kiln-build/kiln/internal/version"
)

// Supply chain: signatures and attestations of the pushed manifests
// (spec.signing, spec.attestations). They are attached after the image is
// pushed (a referrer's subject must exist first) and before the build
// reports success: Ready means pushed and verifiable. Every byte is a
// function of the key, the spec and the image, so a re-run produces the same
// artifacts, finds them attached and writes nothing.

// signer is spec.signing's key, parsed before anything is fetched so that a
// missing or broken key fails the build before any push.
type signer struct {
	key    *signing.Key
	format signing.Format
}

// signerOf reads the cosign key pair from the keyRef Secret of in; nil
// when the spec does not sign.
func signerOf(spec *kilnv1.ImageBuildSpec, in Inputs) (*signer, error) {
	if spec.Signing == nil || spec.Signing.Cosign == nil {
		return nil, nil
	}
	c := spec.Signing.Cosign
	name := c.KeyRef.Name
	data, ok := in.Secrets[name]
	if !ok {
		return nil, failure.Permanentf(failure.SigningKeyNotFound,
			"signing: Secret %q (spec.signing.cosign.keyRef) not found in the ImageBuild's namespace", name)
	}
	pemKey, ok := data[kilnv1.CosignKeyKey]
	if !ok {
		return nil, failure.Permanentf(failure.SigningKeyNotFound,
			"signing: Secret %q has no key %q (the PEM private key of `cosign generate-key-pair`)", name, kilnv1.CosignKeyKey)
	}
	key, err := signing.ParseKey(pemKey, data[kilnv1.CosignPasswordKey])
	if err != nil {
		var ke *signing.KeyError
		if errors.As(err, &ke) {
			return nil, failure.Permanentf(failure.SigningKeyInvalid, "signing: Secret %q: %v", name, ke)
		}
		return nil, failure.Permanent(failure.SigningKeyInvalid, fmt.Errorf("signing: Secret %q: %w", name, err))
	}
	format := signing.FormatBundle
	if c.Format == kilnv1.SignatureLegacy {
		format = signing.FormatLegacy
	}
	return &signer{key: key, format: format}, nil
}

// subject is one pushed manifest to sign and attest.
type subject struct {
	desc     v1.Descriptor
	platform string
	// img is what its attestations say: its base and added layers (an
	// index's: every child's layers, its spec base).
	img attest.Image
}

// subjectsOf lists the pushed manifests: the image, or each child of an
// index and then the index itself. children are the build's (childrenOf),
// in the order of status.manifests.
func subjectsOf(ns, repo string, art registry.Artifact, st *kilnv1.ImageBuildStatus, children []child, files map[string]*layer.FileList) ([]subject, error) {
	raw, err := art.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the pushed manifest: %w", err)
	}
	d, err := art.Digest()
	if err != nil {
		return nil, fmt.Errorf("computing the pushed manifest digest: %w", err)
	}
	top := subject{desc: v1.Descriptor{Digest: d, Size: int64(len(raw)), MediaType: types.MediaType(st.MediaType)}}
	top.img = attest.Image{Name: repo, Digest: d, Base: dependencyOf(st.Base)}
	if len(st.Manifests) == 0 {
		top.img.Layers = attestLayers(ns, children[0].spec, st.Layers, files)
		return []subject{top}, nil
	}
	out := make([]subject, 0, len(st.Manifests)+1)
	for i, m := range st.Manifests {
		h, err := v1.NewHash(m.Digest)
		if err != nil {
			return nil, fmt.Errorf("platform %s: digest %q: %w", m.Platform, m.Digest, err)
		}
		layers := attestLayers(ns, children[i].spec, m.Layers, files)
		out = append(out, subject{
			desc:     v1.Descriptor{Digest: h, Size: m.Size, MediaType: types.MediaType(m.MediaType)},
			platform: m.Platform,
			img:      attest.Image{Name: repo, Digest: h, Base: dependencyOf(m.Base), Layers: layers},
		})
		top.img.Layers = append(top.img.Layers, layers...)
	}
	return append(out, top), nil
}

// dependencyOf is a base for attestations; nil for scratch (no digest).
func dependencyOf(b *kilnv1.BaseStatus) *attest.Dependency {
	if b == nil || b.Digest == "" {
		return nil
	}
	h, err := v1.NewHash(b.Digest)
	if err != nil {
		return nil
	}
	name := b.Image
	if i := strings.LastIndex(name, "@"); i >= 0 {
		name = name[:i]
	} else if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return &attest.Dependency{Name: attest.RedactURI(name), Digest: h}
}

// attestLayers describes the added layers of one image: where each came
// from (spec, the child's own for an index), its digests and file list.
func attestLayers(ns string, spec *kilnv1.ImageBuildSpec, st []kilnv1.LayerStatus, files map[string]*layer.FileList) []attest.Layer {
	sources := map[string]*kilnv1.Source{}
	for i := range spec.Layers {
		sources[spec.Layers[i].Name] = spec.Layers[i].Source
	}
	out := make([]attest.Layer, 0, len(st))
	for _, l := range st {
		al := attest.Layer{Name: l.Name, Files: files[l.DiffID]}
		if s := sources[l.Name]; s != nil {
			al.URI = sourceURI(ns, s)
		}
		// A Secret-bearing layer's sourceDigest is "secret:…", no hash:
		// it stays unset (never the sha256 of Secret bytes).
		al.SourceDigest, _ = v1.NewHash(l.SourceDigest)
		al.DiffID, _ = v1.NewHash(l.DiffID)
		al.Digest, _ = v1.NewHash(l.Digest)
		out = append(out, al)
	}
	return out
}

// sourceURI is a layer's location in attestations: the URL (redacted by
// attest), "configMap:<ns>/<name>/<key>", "secret:<ns>/<name>/<key>", the
// blob reference, else the source as status describes it.
func sourceURI(ns string, s *kilnv1.Source) string {
	switch {
	case s.URL != "":
		return s.URL
	case s.ConfigMap != nil:
		return "configMap:" + ns + "/" + s.ConfigMap.Name + "/" + s.ConfigMap.Key
	case s.Secret != nil:
		return "secret:" + ns + "/" + s.Secret.Name + "/" + s.Secret.Key
	case s.Blob != "":
		return s.Blob
	case s.ConfigMapDir != nil:
		return "configMapDir:" + ns + "/" + s.ConfigMapDir.Name
	case s.SecretDir != nil:
		return "secretDir:" + ns + "/" + s.SecretDir.Name
	}
	return describe(s)
}

// attachment is one signature or attestation of a subject.
type attachment struct {
	kind  string // "cosign", "spdx", "slsaprovenance1"
	image v1.Image
}

// prepared is a subject with the signature and attestations to attach.
type prepared struct {
	subject subject
	arts    []attachment
}

// prepareAttachments signs and attests every subject on another goroutine
// and returns the function that waits for them: the image's digests are
// known before it is pushed, so encoding and signing the statements (the
// SBOM of a big rootfs is megabytes of JSON) overlaps the image push. st is
// a copy of the status so far, read while the push fills other fields of
// the caller's. nil when the spec does not sign.
func (e *Engine) prepareAttachments(ib *kilnv1.ImageBuild, sg *signer, children []child, art registry.Artifact, st kilnv1.ImageBuildStatus, files map[string]*layer.FileList, o registry.Options) func() ([]prepared, error) {
	if sg == nil {
		return func() ([]prepared, error) { return nil, nil }
	}
	type result struct {
		ps  []prepared
		err error
	}
	done := make(chan result, 1)
	go func() {
		ps, err := e.prepare(ib, sg, children, art, &st, files, repoOf(ib.Spec.Target.Image, o))
		done <- result{ps, err}
	}()
	return func() ([]prepared, error) {
		r := <-done
		return r.ps, r.err
	}
}

func (e *Engine) prepare(ib *kilnv1.ImageBuild, sg *signer, children []child, art registry.Artifact, st *kilnv1.ImageBuildStatus, files map[string]*layer.FileList, repo string) ([]prepared, error) {
	subjects, err := subjectsOf(ib.Namespace, repo, art, st, children, files)
	if err != nil {
		return nil, err
	}
	out := make([]prepared, 0, len(subjects))
	for _, s := range subjects {
		arts, err := e.artifactsOf(ib, sg, s, repo)
		if err != nil {
			return nil, err
		}
		out = append(out, prepared{subject: s, arts: arts})
	}
	return out, nil
}

// attach pushes what the registry does not hold yet of the prepared
// artifacts (in DryRun only records their digests); status gets one entry
// per artifact.
func (e *Engine) attach(ctx context.Context, ib *kilnv1.ImageBuild, sg *signer, ps []prepared, res *Result, o registry.Options, opts Options) error {
	repo := repoOf(ib.Spec.Target.Image, o)
	for _, p := range ps {
		if err := e.pushArtifacts(ctx, sg, repo, p.subject, p.arts, res, o, opts); err != nil {
			return err
		}
	}
	return nil
}

// artifactsOf signs s and makes its attestations.
func (e *Engine) artifactsOf(ib *kilnv1.ImageBuild, sg *signer, s subject, repo string) ([]attachment, error) {
	at := created(&ib.Spec)
	sig, err := signing.SignatureArtifact(sg.key, s.desc, repo, sg.format, at)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", s.desc.Digest, err)
	}
	out := []attachment{{kind: signatureKind, image: sig}}
	stmts, err := e.statements(ib, s)
	if err != nil {
		return nil, err
	}
	for _, st := range stmts {
		img, err := signing.AttestationArtifact(sg.key, s.desc, st.body, st.predicateType, sg.format, at)
		if err != nil {
			return nil, fmt.Errorf("attesting %s (%s): %w", s.desc.Digest, st.kind, err)
		}
		out = append(out, attachment{kind: st.kind, image: img})
	}
	return out, nil
}

// signatureKind is status.signatures[].type.
const signatureKind = "cosign"

// pushArtifacts attaches arts to s: bundle referrers by digest (the
// referrers API or its tag-schema index), or merged into the legacy
// .sig/.att tags. Already attached artifacts are not written again.
func (e *Engine) pushArtifacts(ctx context.Context, sg *signer, repo string, s subject, arts []attachment, res *Result, o registry.Options, opts Options) error {
	if sg.format == signing.FormatLegacy {
		return e.pushLegacy(ctx, repo, s, arts, res, o, opts)
	}
	return e.pushReferrers(ctx, repo, s, arts, res, o, opts)
}

// pushLegacy merges each artifact into its subject's .sig or .att tag.
func (e *Engine) pushLegacy(ctx context.Context, repo string, s subject, arts []attachment, res *Result, o registry.Options, opts Options) error {
	for _, a := range arts {
		tag := signing.AttestationTag(s.desc.Digest)
		if a.kind == signatureKind {
			tag = signing.SignatureTag(s.desc.Digest)
		}
		d, err := a.image.Digest()
		if err != nil {
			return err
		}
		written := false
		if !opts.DryRun {
			written, _, err = registry.UpdateTag(ctx, repo+":"+tag, func(existing v1.Image) (v1.Image, error) {
				return signing.AppendLegacy(existing, a.image)
			}, o)
			if err != nil {
				return fmt.Errorf("attaching the %s of %s: %w", a.kind, s.desc.Digest, err)
			}
		}
		record(res, a.kind, s, kilnv1.AttachedArtifact{Digest: d.String(), Tag: tag}, written)
	}
	return nil
}

// record adds a status entry and counts a write.
func record(res *Result, kind string, s subject, a kilnv1.AttachedArtifact, written bool) {
	a.Type, a.Subject, a.Platform = kind, s.desc.Digest.String(), s.platform
	if kind == signatureKind {
		res.Status.Signatures = append(res.Status.Signatures, a)
		if written {
			res.SignaturesWritten++
		}
		return
	}
	res.Status.Attestations = append(res.Status.Attestations, a)
	if written {
		res.AttestationsWritten++
	}
}

// externalParameters is the provenance's view of the spec: the spec as
// applied, with every source URL redacted (egress.RedactURL: no userinfo,
// no query), since provenance is readable by anyone who can pull the image.
func externalParameters(spec *kilnv1.ImageBuildSpec) (json.RawMessage, error) {
	c := spec.DeepCopy()
	for _, s := range c.AllSources() {
		if s.URL != "" {
			s.URL = egress.RedactURL(s.URL)
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding the spec for provenance: %w", err)
	}
	return b, nil
}

// pushReferrers attaches bundle-format artifacts as referrers of s: the
// signature, then the attestations (two listings, so that the counts of
// what was written are exact per kind).
func (e *Engine) pushReferrers(ctx context.Context, repo string, s subject, arts []attachment, res *Result, o registry.Options, opts Options) error {
	sub := repo + "@" + s.desc.Digest.String()
	for _, group := range [][]attachment{arts[:1], arts[1:]} {
		if len(group) == 0 {
			continue
		}
		imgs := make([]v1.Image, len(group))
		entries := make([]kilnv1.AttachedArtifact, len(group))
		for i, a := range group {
			d, err := a.image.Digest()
			if err != nil {
				return fmt.Errorf("computing the digest of the %s of %s: %w", a.kind, s.desc.Digest, err)
			}
			imgs[i], entries[i] = a.image, kilnv1.AttachedArtifact{Digest: d.String(), Referrer: true}
		}
		written := 0
		if !opts.DryRun {
			var err error
			if written, err = registry.PushReferrers(ctx, sub, imgs, o); err != nil {
				return fmt.Errorf("attaching the %s of %s: %w", group[0].kind, s.desc.Digest, err)
			}
		}
		for i, a := range group {
			record(res, a.kind, s, entries[i], false)
		}
		if group[0].kind == signatureKind {
			res.SignaturesWritten += written
		} else {
			res.AttestationsWritten += written
		}
	}
	return nil
}

// statement is one attestation's in-toto statement.
type statement struct {
	kind, predicateType string
	body                []byte
}

// statements renders the attestations spec.attestations asks for about s.
func (e *Engine) statements(ib *kilnv1.ImageBuild, s subject) ([]statement, error) {
	a := ib.Spec.Attestations
	if a == nil {
		return nil, nil
	}
	at := created(&ib.Spec)
	var out []statement
	if a.SBOM != nil {
		img := s.img
		if !a.SBOM.WantsFiles() {
			img.Layers = withoutFiles(img.Layers)
		}
		b, err := attest.SBOM(img, at)
		if err != nil {
			return nil, fmt.Errorf("writing the SBOM of %s: %w", s.desc.Digest, err)
		}
		out = append(out, statement{kind: "spdx", predicateType: attest.PredicateSPDX, body: b})
	}
	if a.Provenance != nil {
		params, err := externalParameters(&ib.Spec)
		if err != nil {
			return nil, err
		}
		b, err := attest.Provenance(s.img, attest.Build{
			Spec: params, Namespace: ib.Namespace, Name: ib.Name, UID: string(ib.UID), Generation: ib.Generation,
			BuilderID: e.BuilderID,
			Internal:  map[string]string{"engine": version.Engine},
		}, at)
		if err != nil {
			return nil, fmt.Errorf("writing the provenance of %s: %w", s.desc.Digest, err)
		}
		out = append(out, statement{kind: "slsaprovenance1", predicateType: attest.PredicateSLSA, body: b})
	}
	return out, nil
}

func withoutFiles(ls []attest.Layer) []attest.Layer {
	out := make([]attest.Layer, len(ls))
	for i, l := range ls {
		l.Files = nil
		out[i] = l
	}
	return out
}
