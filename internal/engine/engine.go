// Package engine is kiln's engine: an ImageBuild spec plus the inputs resolved
// by the caller go in, the full status (every digest, with provenance) or a
// classified error comes out. The controller and the CLI both create it with
// NewEngine and call Build, and neither duplicates any of its logic; the
// controller's own registry checks (TargetHolds, ResolveBase) are engine
// calls too, so all registry and source I/O happens here.
package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/source"
)

// Engine builds images. One Engine is shared by all builds of a process so
// that identical layers are fetched and encoded once (single-flight and the
// content-addressed store).
type Engine struct {
	// Store is the blob cache shared by every build.
	Store *blobstore.Store
	// flights shares in-flight layer productions among concurrent builds
	// presenting the same identity.
	flights flightGroup
	// Source configures fetching (HTTP client, size cap, allowed hosts).
	Source source.Options
	// Registry configures pulls and pushes (transport, retries).
	Registry registry.Options
	// Limits bound each layer (size, entries, headers, ratio).
	Limits layer.Limits
	// LayerAttempts is how often a layer whose stream broke mid-way is
	// fetched again before the error is returned as transient. Default 3.
	LayerAttempts int
	// BuildTimeout bounds one Build, from the first fetch to the push;
	// default DefaultBuildTimeout, negative for none. See deadlineError.
	BuildTimeout time.Duration
	// BuilderID is the SLSA provenance builder.id; empty is
	// DefaultBuilderID().
	BuilderID string
	// Now is the clock for status timestamps (never for image bytes).
	Now func() time.Time
}

// Inputs are what the caller resolved outside the engine: ConfigMap and
// Secret data of the ImageBuild's namespace and registry credentials.
type Inputs struct {
	// ConfigMaps maps name -> key -> bytes (binaryData and data merged).
	ConfigMaps map[string]map[string][]byte
	// Secrets maps name -> key -> bytes.
	Secrets map[string]map[string][]byte
	// Keychain authenticates to registries; nil means Registry.Keychain.
	Keychain authn.Keychain
	// Artifacts are the artifacts of the spec's sourceRefs, by
	// ArtifactKey; a sourceRef missing here is SourceNotFound.
	Artifacts map[string]Artifact
}

// Options tune one Build call.
type Options struct {
	// DryRun computes every digest without pushing (kiln plan).
	DryRun bool
	// Force pushes the manifest even when the target already holds its
	// digest (registry.Options.Force): the controller's
	// reconcile.fluxcd.io/forceAt, to repair a registry.
	Force bool
	// Progress, when set, receives byte counts per layer as they move.
	Progress func(Progress)
	// Files lists every regular file of every added layer with its sha256
	// (the SBOM's files) in Result.Files. The hashes come from the
	// normalization pass; a cached layer's list from the cache.
	Files bool
}

// Progress reports one layer's bytes so far.
type Progress struct {
	Layer    string
	BytesIn  int64
	BytesOut int64
	Done     bool
}

// Result is the outcome of a successful Build.
type Result struct {
	// Status is the ImageBuild status as the controller writes it (without
	// conditions, observedGeneration and history, which belong to the caller).
	Status kilnv1.ImageBuildStatus
	// UpToDate is true when the target already held the digest: nothing was written.
	UpToDate bool
	// WouldPush is set by DryRun: a push would write to the registry.
	WouldPush bool
	// BytesIn fetched from sources, BytesOut uploaded.
	BytesIn, BytesOut int64
	// CacheHits counts layers taken from the cache without encoding.
	CacheHits int
	// Encoded counts layers fetched and encoded by this build: a layer
	// shared by several platforms of an index counts once per shaping.
	Encoded int
	// SignaturesWritten and AttestationsWritten count what this build
	// attached; zero when the registry already held every one.
	SignaturesWritten, AttestationsWritten int
	// Files maps each added layer's diffID ("sha256:<hex>", as in
	// status.layers[].diffID, also of an index's children) to its file
	// list; set when Options.Files was.
	Files map[string]*layer.FileList
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// DefaultBuildTimeout is the default of Engine.BuildTimeout.
const DefaultBuildTimeout = 2 * time.Hour

// errBuildDeadline is the cause of the context of a Build that ran out of
// time, which tells it apart from the caller's own cancellation.
var errBuildDeadline = errors.New("build deadline exceeded")

// Build runs one ImageBuild: resolve base, produce layers, assemble in one
// pass, verify, push (unless DryRun) and return the status. Nothing is pushed
// when any step fails. The whole build runs under BuildTimeout.
func (e *Engine) Build(ctx context.Context, ib *kilnv1.ImageBuild, in Inputs, opts Options) (*Result, error) {
	limit := e.BuildTimeout
	if limit == 0 {
		limit = DefaultBuildTimeout
	}
	if limit < 0 {
		return e.build(ctx, ib, in, opts)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, limit, errBuildDeadline)
	defer cancel()
	res, err := e.build(ctx, ib, in, opts)
	if err != nil && errors.Is(context.Cause(ctx), errBuildDeadline) {
		return nil, deadlineError(limit, err)
	}
	return res, err
}

// deadlineError reports a build that ran out of time. The error it cut
// short says what was running (the layer being fetched, the base, the
// push); whatever that error was classified as, the build failed because of
// the deadline. It is permanent: a build that cannot finish in time (a
// trickling source just above the minimum rate, a huge layer) must hold a
// worker once, not again on every retry; a changed spec or a raised
// --build-timeout lets it run again.
func deadlineError(limit time.Duration, err error) error {
	return failure.Permanentf(failure.LimitExceeded, "build exceeded its deadline of %s (--build-timeout): %v", limit, err)
}

func (e *Engine) build(ctx context.Context, ib *kilnv1.ImageBuild, in Inputs, opts Options) (*Result, error) {
	start := e.now()
	ib = withSourceAnnotations(ib, in)
	spec := &ib.Spec
	regOpts, err := e.registryOptions(spec, in)
	if err != nil {
		return nil, err
	}
	if _, err := registry.ParseReference(spec.Target.Image, regOpts); err != nil {
		return nil, failure.Permanent(failure.InvalidSpec, fmt.Errorf("target.image: %w", err))
	}
	sg, err := signerOf(spec, in)
	if err != nil {
		return nil, err
	}
	children, err := childrenOf(spec)
	if err != nil {
		return nil, err
	}
	bases, baseIn, err := e.resolveBases(ctx, spec, children, in, regOpts)
	if err != nil {
		return nil, err
	}
	// The bases' stored blobs stay pinned against eviction until the push is done.
	defer func() {
		for _, b := range bases {
			b.Release()
		}
	}()
	wantFiles := opts.Files || (sg != nil && spec.Attestations != nil && spec.Attestations.SBOM.WantsFiles())
	set, err := e.buildLayerSet(ctx, children, bases, in, regOpts, wantFiles, opts.Progress)
	if err != nil {
		return nil, err
	}
	defer set.release()
	res := &Result{BytesIn: baseIn + set.bytesIn, CacheHits: set.cacheHits, Encoded: set.encoded, Files: set.files()}
	var art registry.Artifact
	if len(spec.Platforms) == 0 {
		asm, err := e.assemble(spec, bases[0], set.layers[0])
		if err != nil {
			return nil, err
		}
		res.Status, art = statusOf(spec, bases[0], set.layers[0], asm), asm.Image
	} else {
		idx, st, err := e.assembleIndex(spec, children, bases, set.layers)
		if err != nil {
			return nil, err
		}
		res.Status, art = st, idx.Index
	}
	attachments := e.prepareAttachments(ib, sg, children, art, res.Status, res.Files, regOpts)
	if err := e.publish(ctx, spec, art, set.jobs, regOpts, opts, res); err != nil {
		_, _ = attachments() // the goroutine ends; its work is dropped
		return nil, err
	}
	ps, err := attachments()
	if err != nil {
		return nil, err
	}
	if err := e.attach(ctx, ib, sg, ps, res, regOpts, opts); err != nil {
		return nil, err
	}
	end := e.now()
	result := kilnv1.ResultPushed
	if res.UpToDate || opts.DryRun {
		result = kilnv1.ResultUpToDate
	}
	res.Status.LastBuild = &kilnv1.LastBuild{
		StartTime: metav1.NewTime(start), CompletionTime: metav1.NewTime(end),
		Duration: metav1.Duration{Duration: end.Sub(start).Round(time.Millisecond)},
		Result:   result, BytesIn: res.BytesIn, BytesOut: res.BytesOut,
	}
	return res, nil
}

// publish pushes the assembled image, or in DryRun only asks whether the
// target already holds it.
func (e *Engine) publish(ctx context.Context, spec *kilnv1.ImageBuildSpec, art registry.Artifact, added []*builtLayer, o registry.Options, opts Options, res *Result) error {
	digest, err := art.Digest()
	if err != nil {
		return fmt.Errorf("computing the digest to push: %w", err)
	}
	if opts.DryRun {
		held, err := registry.Exists(ctx, spec.Target.Image, digest, o)
		if err != nil {
			return err
		}
		res.WouldPush = !held
		res.UpToDate = held
		res.Status.Image = repoOf(spec.Target.Image, o) + "@" + digest.String()
		return nil
	}
	o.MountFrom = e.mountSources(spec.Target.Image, o, added)
	o.Force = opts.Force
	pr, err := registry.Push(ctx, art, spec.Target.Image, spec.Target.Tags, o)
	if err != nil {
		return err
	}
	e.recordPushed(spec.Target.Image, o, added)
	res.UpToDate = pr.UpToDate
	res.BytesOut = pr.BytesUploaded
	res.Status.Image = pr.Image
	res.Status.Tags = pr.Tags
	if pr.Digest != digest {
		return failure.Permanentf(failure.PushRejected, "registry reports digest %s for the pushed manifest, kiln computed %s", pr.Digest, digest)
	}
	return nil
}

// pushedRecord remembers a repository that holds a blob kiln pushed, so that
// a later build to another repository of the same registry mounts the blob
// instead of uploading it again.
type pushedRecord struct {
	Repository string `json:"repository"`
}

func pushedKey(registryHost string, d v1.Hash) string {
	return "pushed-" + registryHost + "-" + d.Hex
}

// mountSources returns, for the added layers, repositories of the target's
// registry known to hold them.
func (e *Engine) mountSources(target string, o registry.Options, added []*builtLayer) map[v1.Hash]string {
	ref, err := registry.ParseReference(target, o)
	if err != nil {
		return nil
	}
	out := map[v1.Hash]string{}
	for _, l := range added {
		var rec pushedRecord
		if ok, err := e.Store.GetMeta(pushedKey(ref.Context().RegistryStr(), l.addition.Digest), &rec); err == nil && ok && rec.Repository != ref.Context().Name() {
			out[l.addition.Digest] = rec.Repository
		}
	}
	return out
}

// recordPushed notes that the target's repository now holds the added
// layers. Losing a record only costs an upload later.
func (e *Engine) recordPushed(target string, o registry.Options, added []*builtLayer) {
	ref, err := registry.ParseReference(target, o)
	if err != nil {
		return
	}
	for _, l := range added {
		_ = e.Store.PutMeta(pushedKey(ref.Context().RegistryStr(), l.addition.Digest), pushedRecord{Repository: ref.Context().Name()})
	}
}

func repoOf(target string, o registry.Options) string {
	ref, err := registry.ParseReference(target, o)
	if err != nil {
		return target
	}
	return ref.Context().Name()
}

// registryOptions are the engine's registry options with the spec's
// credentials (in.Keychain), insecure flag and CA bundle (read from in's
// ConfigMaps/Secrets). The controller's checks (TargetHolds, ResolveBase)
// start from them too, so pushes and checks always talk to a registry the
// same way. A CA bundle the inputs lack is a SourceNotFound error, never
// silently no extra roots.
//
// Unless Registry.Policy is set, the host policy is built from the same
// Source.AllowedHosts that confines URL sources, so one flag governs every
// connection; for registries (base, target, blob sources) it only exempts
// hosts from the link-local and metadata refusals.
func (e *Engine) registryOptions(spec *kilnv1.ImageBuildSpec, in Inputs) (registry.Options, error) {
	o := e.Registry
	if o.Policy == nil {
		p := egress.RegistryPolicy(e.Source.AllowedHosts)
		o.Policy = &p
	}
	if in.Keychain != nil {
		o.Keychain = in.Keychain
	}
	o.Insecure = spec.Target.Insecure
	ca, err := caBundle(spec, in)
	if err != nil {
		return o, err
	}
	if len(ca) > 0 {
		o.CABundle = ca
	}
	return o, nil
}

func caBundle(spec *kilnv1.ImageBuildSpec, in Inputs) ([]byte, error) {
	cb := spec.Target.CABundle
	switch {
	case cb == nil:
		return nil, nil
	case cb.ConfigMap != nil:
		return caKey(keyOf(in.ConfigMaps, "ConfigMap", cb.ConfigMap))
	case cb.Secret != nil:
		return caKey(keyOf(in.Secrets, "Secret", cb.Secret))
	}
	return nil, nil
}

func caKey(data []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, fmt.Errorf("target.caBundle: %w", err)
	}
	return data, nil
}

// assemble builds config and manifest in one pass and verifies them.
func (e *Engine) assemble(spec *kilnv1.ImageBuildSpec, base *image.Base, layers []*builtLayer) (*image.Assembled, error) {
	s := image.Spec{
		Base:        base,
		Config:      configOf(spec.Config),
		Annotations: spec.Annotations,
		Created:     created(spec),
		Zstd:        outputCompression(spec) == "zstd",
	}
	for _, l := range layers {
		s.Additions = append(s.Additions, l.addition)
	}
	asm, err := image.Assemble(s)
	if err != nil {
		return nil, fmt.Errorf("assembling image: %w", err)
	}
	if err := image.Verify(asm); err != nil {
		return nil, failure.Permanent(failure.InvalidLayer, fmt.Errorf("verifying image before push: %w", err))
	}
	return asm, nil
}

// configOf is the one place the API's image config becomes image's.
func configOf(c *kilnv1.ImageConfig) image.Config {
	if c == nil {
		return image.Config{}
	}
	return image.Config{
		Env: envOf(c.Env), Entrypoint: c.Entrypoint, Cmd: c.Cmd,
		EntrypointSet: c.Entrypoint != nil, CmdSet: c.Cmd != nil,
		WorkingDir: c.WorkingDir, User: c.User, Labels: c.Labels,
		ExposedPorts: c.ExposedPorts, Volumes: c.Volumes, StopSignal: c.StopSignal,
	}
}

func envOf(vars []kilnv1.EnvVar) []image.EnvVar {
	out := make([]image.EnvVar, len(vars))
	for i, v := range vars {
		out[i] = image.EnvVar{Name: v.Name, Value: v.Value}
	}
	return out
}

// statusOf records every digest of the assembled image.
func statusOf(spec *kilnv1.ImageBuildSpec, base *image.Base, layers []*builtLayer, asm *image.Assembled) kilnv1.ImageBuildStatus {
	st := kilnv1.ImageBuildStatus{
		Digest:       asm.Digest.String(),
		ConfigDigest: asm.ConfigDigest.String(),
		MediaType:    string(asm.MediaType),
		Notes:        asm.Notes,
		Base:         &kilnv1.BaseStatus{Image: base.Name, Platform: platformString(base.Platform)},
	}
	if !base.Scratch && base.Digest != (v1.Hash{}) {
		st.Base.Digest = base.Digest.String()
	}
	if base.RefDigest != (v1.Hash{}) {
		// For an index base the reference resolves to the index, not the
		// chosen child: drift polling must compare against this one.
		st.Base.RefDigest = base.RefDigest.String()
	}
	var sources []string
	for _, l := range layers {
		st.Layers = append(st.Layers, l.status)
		sources = append(sources, l.input)
	}
	st.InputDigest = InputDigest(spec, st.Base.Digest, sources)
	return st
}

func platformString(p v1.Platform) string {
	parts := []string{p.OS, p.Architecture}
	if p.Variant != "" {
		parts = append(parts, p.Variant)
	}
	s := strings.Join(parts, "/")
	if p.OSVersion != "" {
		s += ":" + p.OSVersion
	}
	return s
}
