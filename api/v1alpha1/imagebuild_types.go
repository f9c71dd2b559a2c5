package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Compression names how a layer's fetched bytes are compressed.
// +kubebuilder:validation:Enum=auto;none;gzip;zstd;xz;bzip2
type Compression string

// Compression values. auto detects the format from the first bytes.
const (
	CompressionAuto  Compression = "auto"
	CompressionNone  Compression = "none"
	CompressionGzip  Compression = "gzip"
	CompressionZstd  Compression = "zstd"
	CompressionXz    Compression = "xz"
	CompressionBzip2 Compression = "bzip2"
)

// OutputCompression names how kiln compresses the layers it pushes.
// +kubebuilder:validation:Enum=gzip;zstd
type OutputCompression string

// OutputCompression values.
const (
	OutputGzip OutputCompression = "gzip"
	OutputZstd OutputCompression = "zstd"
)

// NormalizeMode says how much of a layer's tar kiln may rewrite.
// +kubebuilder:validation:Enum=minimal;reproducible
type NormalizeMode string

// NormalizeMode values.
const (
	// NormalizeMinimal keeps the tar's bytes whenever it is safe to, so an
	// already-compressed layer can be pushed without recompression.
	NormalizeMinimal NormalizeMode = "minimal"
	// NormalizeReproducible rewrites every header deterministically (clamped
	// mtimes, no owner names, allow-listed PAX records); it forces recompression.
	NormalizeReproducible NormalizeMode = "reproducible"
)

// BaseUpdatePolicy says what happens when a tag base moves to a new digest.
// +kubebuilder:validation:Enum=Rebuild;Report
type BaseUpdatePolicy string

// BaseUpdatePolicy values.
const (
	BaseUpdateRebuild BaseUpdatePolicy = "Rebuild"
	BaseUpdateReport  BaseUpdatePolicy = "Report"
)

// ScratchImage is the base image name meaning "no base".
const ScratchImage = "scratch"

// SecretSourceDigestPrefix starts status.layers[].sourceDigest of a layer
// read from a Secret ("secret:<name>/<key>"): the sha256 of secret bytes is
// never shown.
const SecretSourceDigestPrefix = "secret:"

// ImageBuildSpec is the desired image: a base, layers applied in order, the
// image configuration and where to push the result.
// +kubebuilder:validation:XValidation:rule="!has(self.layers) || self.layers.all(l, self.layers.exists_one(m, m.name == l.name))",message="layer names must be unique"
// +kubebuilder:validation:XValidation:rule="!has(self.platforms) || !has(self.base) || !has(self.base.platform)",message="spec.base.platform and spec.platforms are mutually exclusive: list the platforms in spec.platforms"
// +kubebuilder:validation:XValidation:rule="has(self.platforms) || !has(self.layers) || self.layers.all(l, !has(l.variants) && !has(l.platforms))",message="layers[].variants and layers[].platforms need spec.platforms"
// +kubebuilder:validation:XValidation:rule="!has(self.platforms) || !has(self.layers) || self.layers.all(l, !has(l.variants) || l.variants.all(v, self.platforms.exists(p, p.platform == v.platform || p.platform.startsWith(v.platform + '/') || p.platform.startsWith(v.platform + ':'))))",message="every layers[].variants[].platform must be one of spec.platforms, or a prefix of one (linux/arm64 for linux/arm64/v8)"
// +kubebuilder:validation:XValidation:rule="!has(self.platforms) || !has(self.layers) || self.layers.all(l, !has(l.platforms) || l.platforms.all(q, self.platforms.exists(p, p.platform == q || p.platform.startsWith(q + '/') || p.platform.startsWith(q + ':'))))",message="every layers[].platforms entry must be one of spec.platforms, or a prefix of one"
// +kubebuilder:validation:XValidation:rule="!has(self.platforms) || !has(self.layers) || self.layers.all(l, !has(l.variants) || self.platforms.all(p, (has(l.platforms) && !l.platforms.exists(q, p.platform == q || p.platform.startsWith(q + '/') || p.platform.startsWith(q + ':'))) || l.variants.exists(v, p.platform == v.platform || p.platform.startsWith(v.platform + '/') || p.platform.startsWith(v.platform + ':'))))",message="a layer with variants must have a variant for every platform it applies to (limit it with layers[].platforms)"
// +kubebuilder:validation:XValidation:rule="!has(self.attestations) || has(self.signing)",message="spec.attestations are signed with spec.signing's key: set spec.signing"
type ImageBuildSpec struct {
	// base is the image the layers are added on top of. When omitted the base
	// is scratch (an empty linux/amd64 image).
	// +optional
	Base *Base `json:"base,omitempty"`

	// layers are tarballs added on top of the base, in this order. Each is
	// fetched, verified, normalized and compressed exactly once.
	// +optional
	// +kubebuilder:validation:MaxItems=127
	Layers []Layer `json:"layers,omitempty"`

	// platforms makes the build push an OCI image index with one image per
	// platform instead of a single image. Each child is built exactly as a
	// single-platform build with base.platform set to its platform would
	// be: the child of an index base matching the platform (or the
	// platform's own base), the layers that apply to it (layers[].platforms,
	// layers[].variants), spec.config with the platform's config on top.
	// A layer shared by several platforms is fetched once and encoded once
	// per distinct shaping (Windows layers are shaped differently). Nothing is
	// pushed unless every platform builds. Mutually exclusive with
	// base.platform.
	// +optional
	// +listType=map
	// +listMapKey=platform
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Platforms []PlatformBuild `json:"platforms,omitempty"`

	// normalize is the default normalization for layers that do not set their
	// own: minimal (default) or reproducible.
	// +optional
	Normalize NormalizeMode `json:"normalize,omitempty"`

	// config is the image configuration, merged onto the base image's.
	// +optional
	Config *ImageConfig `json:"config,omitempty"`

	// annotations are set on the pushed manifest. kiln adds
	// org.opencontainers.image.base.name and .digest for non-scratch bases.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// created is the timestamp written into the image config and its history
	// entries, and the upper bound of file mtimes in reproducible layers.
	// Defaults to the Unix epoch so that the same spec always gives the same
	// digest; kiln never reads the clock into an image.
	// +optional
	Created *metav1.Time `json:"created,omitempty"`

	// output sets how pushed layers are encoded.
	// +optional
	Output *Output `json:"output,omitempty"`

	// target is where the image is pushed.
	// +required
	Target Target `json:"target"`

	// serviceAccountName is a ServiceAccount in this namespace whose
	// imagePullSecrets (kubernetes.io/dockerconfigjson Secrets) authenticate
	// kiln to the base, blob and target registries. Empty means anonymous.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// signing signs every pushed manifest (an index and each child) with a
	// cosign key pair. The image is Ready only once its signatures and
	// attestations are attached.
	// +optional
	Signing *Signing `json:"signing,omitempty"`

	// attestations attaches an SBOM and SLSA provenance to every pushed
	// manifest, signed with spec.signing's key (required with them).
	// +optional
	Attestations *Attestations `json:"attestations,omitempty"`

	// suspend stops all work on this ImageBuild until it is set to false.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// interval is how often a Ready ImageBuild is verified: one HEAD request
	// checks that target.image still holds status.digest (an overwritten or
	// deleted tag is rebuilt and pushed again), and a tag base is re-resolved
	// (unless base.pollInterval sets its own period). It is also the cap of
	// the retry backoff of errors that depend on the outside world (a base
	// not pushed yet, a 401 until a pull secret is fixed). Each object's
	// period is spread by up to ±10%, fixed per object, so that many objects
	// created together do not poll together. At least 1m; default 1h.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="interval must be at least 1m"
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// Base is the image a build starts from: exactly one of image or archive.
// +kubebuilder:validation:XValidation:rule="has(self.image) != has(self.archive)",message="exactly one of base.image or base.archive must be set"
type Base struct {
	// image is "scratch" or an image reference by tag or digest, e.g.
	// registry.example/base:1.2 or registry.example/base@sha256:....
	// +optional
	// +kubebuilder:validation:MinLength=1
	Image string `json:"image,omitempty"`

	// archive is a `docker save` or OCI image-layout tarball, uncompressed or
	// compressed with gzip, zstd, xz or bzip2. It is decompressed under the
	// same limits as a layer (size, compression ratio, entries, decoder
	// memory).
	// +optional
	Archive *Archive `json:"archive,omitempty"`

	// platform selects the child of an index base, and sets os/architecture
	// of a scratch base: os/arch[/variant], optionally followed by
	// ":os.version" (matched by prefix) for Windows, e.g. windows/amd64:10.0.20348.
	// An index base defaults to linux/amd64. A single-image base is taken as
	// it is when platform is empty; when set, it must match the image's own
	// platform (else the build stalls with PlatformNotFound naming both).
	// +optional
	// +kubebuilder:validation:Pattern=`^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?(:[0-9][0-9.]*)?$`
	Platform string `json:"platform,omitempty"`

	// pollInterval is how often a tag base is re-resolved (HEAD request only)
	// to detect that it moved; it overrides spec.interval for base polls
	// only (the target is still verified every spec.interval). Digest,
	// archive and scratch bases are never polled. Default: spec.interval.
	// +optional
	PollInterval *metav1.Duration `json:"pollInterval,omitempty"`

	// updatePolicy says what to do when a tag base moved: Rebuild (default)
	// or Report (only set the BaseUpToDate condition to False).
	// +optional
	UpdatePolicy BaseUpdatePolicy `json:"updatePolicy,omitempty"`
}

// PlatformBuild is one platform of a multi-platform build.
// +kubebuilder:validation:XValidation:rule="!has(self.base) || (!has(self.base.platform) && !has(self.base.pollInterval) && !has(self.base.updatePolicy))",message="platforms[].base takes image or archive only: its platform is platforms[].platform, and polling follows spec.base"
type PlatformBuild struct {
	// platform is os/arch[/variant], optionally followed by ":os.version"
	// (matched by prefix) for Windows, e.g. linux/arm64/v8 or
	// windows/amd64:10.0.20348. It selects the child of an index base the
	// way base.platform does.
	// +required
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?(:[0-9][0-9.]*)?$`
	Platform string `json:"platform"`

	// base overrides spec.base for this platform (e.g. a nanoserver base for
	// windows/amd64). Its platform must match.
	// +optional
	Base *Base `json:"base,omitempty"`

	// config is laid over spec.config for this platform: fields it sets
	// replace spec.config's (env and labels are merged, the platform's
	// values winning), the rest are spec.config's.
	// +optional
	Config *ImageConfig `json:"config,omitempty"`
}

// LayerVariant is a layer's source for the platforms it matches.
type LayerVariant struct {
	// platform this variant is for: one of spec.platforms, or a prefix of
	// one (linux/arm64 matches linux/arm64/v8; windows/amd64 matches
	// windows/amd64:10.0.20348). When several variants match a platform the
	// most specific (longest) one is used.
	// +required
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?(:[0-9][0-9.]*)?$`
	Platform string `json:"platform"`

	// source is where this variant's tarball is fetched from.
	// +required
	Source Source `json:"source"`

	// digest optionally pins the sha256 of the fetched bytes, as layers[].digest.
	// +optional
	// +kubebuilder:validation:Pattern=`^sha256:[a-f0-9]{64}$`
	Digest string `json:"digest,omitempty"`

	// diffID optionally pins the sha256 of the uncompressed tar, as layers[].diffID.
	// +optional
	// +kubebuilder:validation:Pattern=`^sha256:[a-f0-9]{64}$`
	DiffID string `json:"diffID,omitempty"`

	// compression of the fetched bytes, as layers[].compression.
	// +optional
	Compression Compression `json:"compression,omitempty"`
}

// Archive is an image tarball used as base.
// +kubebuilder:validation:XValidation:rule="!has(self.source.files) && !has(self.source.configMapDir) && !has(self.source.secretDir) && !has(self.source.sourceRef)",message="a base archive's source is one of url, configMap, secret or blob"
type Archive struct {
	// source is where the archive is fetched from.
	// +required
	Source Source `json:"source"`

	// digest optionally pins the sha256 of the fetched (possibly compressed) bytes.
	// +optional
	// +kubebuilder:validation:Pattern=`^sha256:[a-f0-9]{64}$`
	Digest string `json:"digest,omitempty"`
}

// Layer is one tarball added to the image.
// +kubebuilder:validation:XValidation:rule="has(self.source) != has(self.variants)",message="exactly one of source or variants must be set"
// +kubebuilder:validation:XValidation:rule="!has(self.variants) || self.variants.all(v, self.variants.exists_one(w, w.platform == v.platform))",message="variant platforms must be unique"
// +kubebuilder:validation:XValidation:rule="!has(self.variants) || (!has(self.digest) && !has(self.diffID) && !has(self.compression))",message="with variants, digest, diffID and compression are set per variant"
type Layer struct {
	// name identifies the layer in status, events and error messages.
	// Unique within the ImageBuild, DNS-label shaped.
	// +required
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// source is where the layer tarball is fetched from, or the files kiln
	// writes into one (files, configMapDir, secretDir, sourceRef). Exactly one of
	// source or variants.
	// +optional
	Source *Source `json:"source,omitempty"`

	// variants give the layer a different source per platform (only with
	// spec.platforms): each platform the layer applies to takes the most
	// specific variant matching it. Exactly one of source or variants.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Variants []LayerVariant `json:"variants,omitempty"`

	// platforms limits the layer to these platforms (only with
	// spec.platforms): entries are spec.platforms values or prefixes of
	// them, matched as variants are. Default: every platform.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?(:[0-9][0-9.]*)?$`
	Platforms []string `json:"platforms,omitempty"`

	// digest optionally pins the sha256 of the fetched (possibly compressed)
	// bytes; a mismatch stops the build before anything is pushed.
	// +optional
	// +kubebuilder:validation:Pattern=`^sha256:[a-f0-9]{64}$`
	Digest string `json:"digest,omitempty"`

	// diffID optionally pins the sha256 of the uncompressed tar kiln pushes.
	// +optional
	// +kubebuilder:validation:Pattern=`^sha256:[a-f0-9]{64}$`
	DiffID string `json:"diffID,omitempty"`

	// compression of the fetched bytes. auto (default) detects it from the
	// first bytes; an explicit value that contradicts the bytes is an error.
	// +optional
	Compression Compression `json:"compression,omitempty"`

	// normalize overrides spec.normalize for this layer.
	// +optional
	Normalize NormalizeMode `json:"normalize,omitempty"`

	// fileMode sets the permission bits of every regular file in the layer,
	// as an octal string ("0644"). A file that had any execute bit gets an
	// execute bit wherever fileMode has a read bit (0644 makes it 0755), so
	// binaries stay runnable. For files, configMapDir and secretDir sources
	// it is instead the mode of entries that set none (default 0644). A
	// sourceRef layer defaults to 0644 (executables 0755).
	// +optional
	// +kubebuilder:validation:Pattern=`^0?[0-7]{3,4}$`
	FileMode string `json:"fileMode,omitempty"`

	// dirMode sets the permission bits of every directory in the layer, as
	// an octal string ("0755"); for files, configMapDir and secretDir
	// sources it is the mode of the directories kiln creates (default 0755);
	// a sourceRef layer defaults to 0755.
	// +optional
	// +kubebuilder:validation:Pattern=`^0?[0-7]{3,4}$`
	DirMode string `json:"dirMode,omitempty"`

	// uid sets the owner of every entry in the layer (owner names are
	// cleared); for generated sources it is the default of entries that set
	// none (default 0); a sourceRef layer defaults to 0.
	// +optional
	// +kubebuilder:validation:Minimum=0
	UID *int64 `json:"uid,omitempty"`

	// gid sets the group of every entry in the layer, as uid.
	// +optional
	// +kubebuilder:validation:Minimum=0
	GID *int64 `json:"gid,omitempty"`
}

// Source says where bytes come from: exactly one of url, configMap, secret,
// blob, files, configMapDir, secretDir or sourceRef.
// +kubebuilder:validation:XValidation:rule="[has(self.url), has(self.configMap), has(self.secret), has(self.blob), has(self.files), has(self.configMapDir), has(self.secretDir), has(self.sourceRef)].filter(x, x).size() == 1",message="exactly one of url, configMap, secret, blob, files, configMapDir, secretDir or sourceRef must be set"
// +kubebuilder:validation:XValidation:rule="has(self.sourceRef) || (!has(self.path) && !has(self.targetDir))",message="path and targetDir are fields of a sourceRef source"
type Source struct {
	// url is an http or https address, fetched with retries on transient errors.
	// +optional
	// +kubebuilder:validation:Pattern=`^https?://.+`
	URL string `json:"url,omitempty"`

	// headersFrom names a Secret in this namespace whose keys and values are
	// sent as HTTP headers with a url request (e.g. Authorization). They
	// follow a redirect only to the same scheme, host and port: once a
	// redirect leads anywhere else, none of them is sent again, even if a
	// later redirect comes back. No redirected request carries a Referer.
	// Accept-Encoding and the conditional-request validators are kiln's own
	// and cannot be overridden.
	// +optional
	HeadersFrom *LocalObjectReference `json:"headersFrom,omitempty"`

	// configMap is a key of a ConfigMap in this namespace (binaryData or data).
	// +optional
	ConfigMap *KeySelector `json:"configMap,omitempty"`

	// secret is a key of a Secret in this namespace.
	// +optional
	Secret *KeySelector `json:"secret,omitempty"`

	// blob is a blob in a registry, as repository@sha256:<hex>, pulled with
	// the same credentials as the target.
	// +optional
	// +kubebuilder:validation:Pattern=`^[^@]+@sha256:[a-f0-9]{64}$`
	Blob string `json:"blob,omitempty"`

	// files are written by kiln into a layer tarball: each entry's content
	// is inline, or one key of a Secret or ConfigMap in this namespace.
	// Parent directories are created; paths are absolute and unique (kiln
	// checks uniqueness when it builds: a CEL rule comparing every pair of
	// 4096-byte paths in every layer and variant exceeds the API server's
	// cost budget). Inline content totals at most 256 KiB; a layer takes
	// at most 64 entries (a configMapDir takes any number of keys).
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.map(f, has(f.content) ? size(f.content) : 0).sum() <= 262144",message="inline files content must total at most 256 KiB: put bigger files in a ConfigMap"
	Files []FileEntry `json:"files,omitempty"`

	// configMapDir writes every key of a ConfigMap (data and binaryData) as
	// a file under targetDir.
	// +optional
	ConfigMapDir *DirSource `json:"configMapDir,omitempty"`

	// secretDir writes every key of a Secret as a file under targetDir.
	// +optional
	SecretDir *DirSource `json:"secretDir,omitempty"`

	// sourceRef is a Flux source (GitRepository, OCIRepository, Bucket or
	// ExternalArtifact) in this namespace: its status.artifact is downloaded
	// from source-controller, verified against the artifact's digest while
	// it streams, and its files (path selects a subdirectory) become a
	// layer under targetDir. Unless the layer sets them, fileMode is 0644
	// (0755 for executables), dirMode 0755, uid and gid 0: source-controller
	// stores files 0600 and directories 0750, unreadable to a non-root user.
	// A source that is not Ready, or has no artifact yet, is waited for.
	// The artifact is verified by its own digest; layers[].digest, when
	// set, pins the tarball kiln writes from it.
	// +optional
	SourceRef *SourceReference `json:"sourceRef,omitempty"`

	// path is the subdirectory of the sourceRef artifact that becomes the
	// layer ("./deploy/base"); default the artifact's root. It is resolved
	// inside the artifact: ".." may not lead out of it, nor may a symlink.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!(self == '..' || self.startsWith('../') || self.endsWith('/..') || self.contains('/../'))",message="path must not contain \"..\": it is a subdirectory of the artifact"
	Path string `json:"path,omitempty"`

	// targetDir is the absolute directory the sourceRef files land in
	// (default /).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/`
	TargetDir string `json:"targetDir,omitempty"`
}

// SourceKind is the kind of a Flux source (source.toolkit.fluxcd.io).
// +kubebuilder:validation:Enum=GitRepository;OCIRepository;Bucket;ExternalArtifact
type SourceKind string

// SourceKind values.
const (
	GitRepositoryKind    SourceKind = "GitRepository"
	OCIRepositoryKind    SourceKind = "OCIRepository"
	BucketKind           SourceKind = "Bucket"
	ExternalArtifactKind SourceKind = "ExternalArtifact"
)

// FluxSourceGroup is the API group of the Flux source kinds.
const FluxSourceGroup = "source.toolkit.fluxcd.io"

// SourceKinds lists every SourceKind.
var SourceKinds = []SourceKind{GitRepositoryKind, OCIRepositoryKind, BucketKind, ExternalArtifactKind}

// SourceReference names a Flux source object in the ImageBuild's namespace.
type SourceReference struct {
	// kind of the Flux source.
	// +required
	Kind SourceKind `json:"kind"`

	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// FileEntry is one file of a files source: exactly one of content,
// secretKeyRef or configMapKeyRef.
// +kubebuilder:validation:XValidation:rule="[has(self.content), has(self.secretKeyRef), has(self.configMapKeyRef)].filter(x, x).size() == 1",message="exactly one of content, secretKeyRef or configMapKeyRef must be set"
type FileEntry struct {
	// path is the file's absolute, clean path in the image (/etc/app/app.yaml).
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/`
	Path string `json:"path"`

	// content is the file's text.
	// +optional
	// +kubebuilder:validation:MaxLength=262144
	Content *string `json:"content,omitempty"`

	// secretKeyRef takes the file's bytes from a key of a Secret.
	// +optional
	SecretKeyRef *KeySelector `json:"secretKeyRef,omitempty"`

	// configMapKeyRef takes the file's bytes from a key of a ConfigMap.
	// +optional
	ConfigMapKeyRef *KeySelector `json:"configMapKeyRef,omitempty"`

	// mode is the file's permission bits as an octal string; default the
	// layer's fileMode, else 0644.
	// +optional
	// +kubebuilder:validation:Pattern=`^0?[0-7]{3,4}$`
	Mode string `json:"mode,omitempty"`

	// uid owns the file; default the layer's uid, else 0.
	// +optional
	// +kubebuilder:validation:Minimum=0
	UID *int64 `json:"uid,omitempty"`

	// gid is the file's group; default the layer's gid, else 0.
	// +optional
	// +kubebuilder:validation:Minimum=0
	GID *int64 `json:"gid,omitempty"`
}

// DirSource is a ConfigMap or Secret whose keys become files in a directory.
type DirSource struct {
	// name of the object in this namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`

	// targetDir is the absolute directory the keys are written into.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/`
	TargetDir string `json:"targetDir"`
}

// KeySelector selects one key of a ConfigMap or Secret in the ImageBuild's namespace.
type KeySelector struct {
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// key within the object's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
}

// LocalObjectReference names an object in the ImageBuild's namespace.
type LocalObjectReference struct {
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// EnvVar is one environment variable of the image.
type EnvVar struct {
	// name of the variable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:Pattern=`^[^=]+$`
	Name string `json:"name"`
	// value may reference base variables as $VAR or ${VAR}, expanded the way
	// a Dockerfile ENV does.
	// +optional
	Value string `json:"value"`
}

// ImageConfig is the part of the OCI image configuration a spec can set.
// Unset fields are inherited from the base image.
type ImageConfig struct {
	// env is merged onto the base environment: a name already present is
	// replaced in place, new names are appended.
	// +optional
	Env []EnvVar `json:"env,omitempty"`
	// entrypoint replaces the base entrypoint; setting it without cmd clears
	// the inherited cmd.
	// +optional
	Entrypoint []string `json:"entrypoint,omitempty"`
	// cmd replaces the base cmd.
	// +optional
	Cmd []string `json:"cmd,omitempty"`
	// workingDir replaces the base working directory.
	// +optional
	WorkingDir string `json:"workingDir,omitempty"`
	// user replaces the base user, e.g. "65532:65532".
	// +optional
	User string `json:"user,omitempty"`
	// labels are merged onto the base labels.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// exposedPorts are added to the base's, as port/protocol, e.g. 8080/tcp.
	// +optional
	ExposedPorts []string `json:"exposedPorts,omitempty"`
	// volumes are added to the base's.
	// +optional
	Volumes []string `json:"volumes,omitempty"`
	// stopSignal replaces the base stop signal, e.g. SIGTERM.
	// +optional
	StopSignal string `json:"stopSignal,omitempty"`
}

// Output sets how layers are encoded.
type Output struct {
	// compression of pushed layers: gzip (default) or zstd. zstd on a Docker
	// media-type base converts the manifest to OCI media types.
	// +optional
	Compression OutputCompression `json:"compression,omitempty"`
}

// Target is where the image is pushed.
type Target struct {
	// image is the reference to push to, e.g. registry.example/team/app:1.0.
	// The manifest is pushed by digest first, then this tag is moved.
	// +required
	// +kubebuilder:validation:MinLength=1
	Image string `json:"image"`
	// tags are extra tags of the same repository moved to the pushed digest.
	// +optional
	Tags []string `json:"tags,omitempty"`
	// insecure talks plain http to this registry. Loopback and private
	// addresses already use http when https is not offered.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
	// caBundle is a PEM bundle (a key of a ConfigMap or Secret in this
	// namespace) trusted for the target, base and blob registries.
	// +optional
	CABundle *CABundleSource `json:"caBundle,omitempty"`
}

// CABundleSource is a ConfigMap or Secret key holding PEM certificates.
// +kubebuilder:validation:XValidation:rule="has(self.configMap) != has(self.secret)",message="exactly one of configMap or secret must be set"
type CABundleSource struct {
	// configMap key holding the bundle.
	// +optional
	ConfigMap *KeySelector `json:"configMap,omitempty"`
	// secret key holding the bundle.
	// +optional
	Secret *KeySelector `json:"secret,omitempty"`
}

// Condition types, with kstatus meaning.
const (
	// ReadyCondition is True when the image for the current spec is pushed and verified.
	ReadyCondition = "Ready"
	// ReconcilingCondition is True while a build runs or is being retried.
	ReconcilingCondition = "Reconciling"
	// StalledCondition is True when the build failed permanently and needs a spec change.
	StalledCondition = "Stalled"
	// BaseUpToDateCondition is False when the base tag moved since the last build.
	BaseUpToDateCondition = "BaseUpToDate"
)

// BuildResult says what the last successful build did.
// +kubebuilder:validation:Enum=Pushed;UpToDate
type BuildResult string

// BuildResult values.
const (
	ResultPushed   BuildResult = "Pushed"
	ResultUpToDate BuildResult = "UpToDate"
)

// ImageBuildStatus is what kiln built and pushed, with every digest.
type ImageBuildStatus struct {
	// observedGeneration is the last generation that reached a conclusion:
	// built and pushed (Ready=True) or stalled (Stalled=True). A generation
	// whose build is queued, running or being retried has not: kstatus (and
	// so Flux's wait and kubectl wait) reads the object as in progress. -1
	// (the default of a new object) means never reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// lastHandledReconcileAt is the value of the
	// reconcile.fluxcd.io/requestedAt annotation last handled: the object
	// was reconciled (inputs re-read, target re-verified) after it was set;
	// with reconcile.fluxcd.io/forceAt equal to it, rebuilt and pushed.
	// +optional
	LastHandledReconcileAt string `json:"lastHandledReconcileAt,omitempty"`
	// queuePosition is the build's place in the build queue when it was
	// queued (Reconciling=True, reason Queued): n means n-1 builds were to
	// start before it. Cleared when the build starts.
	// +optional
	QueuePosition int32 `json:"queuePosition,omitempty"`
	// conditions: Ready, Reconciling, Stalled (kstatus), BaseUpToDate.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// image is the pushed image by digest: repository@sha256:... (with
	// spec.platforms, the index).
	// +optional
	Image string `json:"image,omitempty"`
	// digest of the pushed manifest (with spec.platforms, of the index).
	// +optional
	Digest string `json:"digest,omitempty"`
	// configDigest is the digest of the image config blob (empty for an
	// index: each of manifests[] has its own).
	// +optional
	ConfigDigest string `json:"configDigest,omitempty"`
	// mediaType of the pushed manifest or index.
	// +optional
	MediaType string `json:"mediaType,omitempty"`
	// platforms lists the platforms of a pushed index, in spec order (for
	// the PLATFORMS column); empty for a single image.
	// +optional
	Platforms []string `json:"platforms,omitempty"`
	// manifests are the images of a pushed index, one per spec.platforms
	// entry, in spec order; empty for a single image.
	// +optional
	// +listType=map
	// +listMapKey=platform
	Manifests []ManifestStatus `json:"manifests,omitempty"`
	// inputDigest hashes the normalized spec, every resolved input digest and
	// the engine version: equal inputDigests give equal images.
	// +optional
	InputDigest string `json:"inputDigest,omitempty"`
	// inputsFingerprint hashes the content kiln uses of the ConfigMaps,
	// Secrets and ServiceAccount the last build read: the keys it reads, the
	// pull-secret list and the pull secrets' registry credentials. Edits
	// that change nothing kiln uses (labels, annotations, other keys) leave
	// it unchanged and start no build. Secret values enter it only through
	// an HMAC keyed by the Secret's uid, so it confirms no guess of them.
	// +optional
	InputsFingerprint string `json:"inputsFingerprint,omitempty"`
	// base is the resolved base image. For an index build it is spec.base
	// with digest and refDigest the digest its reference resolved to (the
	// base index); each of manifests[] records its own base child.
	// +optional
	Base *BaseStatus `json:"base,omitempty"`
	// layers added by this build, in order, with provenance (for an index
	// build, per platform in manifests[].layers).
	// +optional
	Layers []LayerStatus `json:"layers,omitempty"`
	// tags that point at digest (target.image's tag and target.tags).
	// +optional
	Tags []string `json:"tags,omitempty"`
	// signatures are the signatures attached to the pushed manifests.
	// +optional
	Signatures []AttachedArtifact `json:"signatures,omitempty"`
	// attestations are the attestations attached to the pushed manifests.
	// +optional
	Attestations []AttachedArtifact `json:"attestations,omitempty"`
	// notes are facts about the build a user should know, e.g. a Docker base
	// converted to OCI media types for zstd layers.
	// +optional
	Notes []string `json:"notes,omitempty"`
	// lastBuild describes the last completed build.
	// +optional
	LastBuild *LastBuild `json:"lastBuild,omitempty"`
	// failures counts consecutive failed attempts since the last success.
	// +optional
	Failures int32 `json:"failures,omitempty"`
	// history holds the last 10 pushed digests, newest first.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	History []HistoryEntry `json:"history,omitempty"`
}

// BaseStatus is the resolved base.
type BaseStatus struct {
	// image is the base as written in the spec (or the archive source).
	Image string `json:"image,omitempty"`
	// digest is the resolved manifest digest of the base (empty for scratch).
	// +optional
	Digest string `json:"digest,omitempty"`
	// refDigest is what the base reference itself resolved to: the index
	// digest when it names an index (digest is then the chosen child's).
	// Drift polling compares a HEAD of the reference with it.
	// +optional
	RefDigest string `json:"refDigest,omitempty"`
	// platform of the base image used.
	// +optional
	Platform string `json:"platform,omitempty"`
	// checkedAt is when a tag base was last resolved.
	// +optional
	CheckedAt *metav1.Time `json:"checkedAt,omitempty"`
}

// ManifestStatus is one image of a pushed index.
type ManifestStatus struct {
	// platform of the image, as its config and the index record it
	// (os/arch[/variant][:os.version], with the full os.version of the
	// base child it was built on).
	Platform string `json:"platform"`
	// requested is the spec.platforms entry this image was built for.
	Requested string `json:"requested"`
	// digest of the image manifest.
	Digest string `json:"digest"`
	// configDigest is the digest of its config blob.
	ConfigDigest string `json:"configDigest"`
	// mediaType of the image manifest.
	MediaType string `json:"mediaType"`
	// size of the image manifest in bytes.
	Size int64 `json:"size"`
	// base is the base image it was built on: for an index base, the
	// chosen child (digest) of the index (refDigest), so per-platform base
	// drift is visible.
	// +optional
	Base *BaseStatus `json:"base,omitempty"`
	// inputDigest hashes this image's inputs, as status.inputDigest does
	// for a single image.
	// +optional
	InputDigest string `json:"inputDigest,omitempty"`
	// layers added to this image, in order.
	// +optional
	Layers []LayerStatus `json:"layers,omitempty"`
}

// LayerStatus records one added layer and where it came from.
type LayerStatus struct {
	// name of the layer in the spec.
	Name string `json:"name"`
	// digest of the pushed (compressed) blob.
	Digest string `json:"digest"`
	// diffID is the sha256 of the uncompressed tar.
	DiffID string `json:"diffID"`
	// size of the pushed blob in bytes.
	Size int64 `json:"size"`
	// uncompressedSize of the tar in bytes.
	// +optional
	UncompressedSize int64 `json:"uncompressedSize,omitempty"`
	// mediaType of the pushed blob.
	MediaType string `json:"mediaType"`
	// sourceDigest is the sha256 of the fetched bytes; for a layer read from
	// a Secret it is "secret:<name>/<key>" instead, because the sha256 of the
	// secret bytes would let anyone who can read this status confirm a guess
	// of them. A digest shown here grants nothing: a build that pins it still
	// has to fetch (or prove access to) the bytes from its own source.
	// +optional
	SourceDigest string `json:"sourceDigest,omitempty"`
	// sourceCompression is the detected compression of the fetched bytes.
	// +optional
	SourceCompression string `json:"sourceCompression,omitempty"`
	// entries is the number of tar entries pushed.
	// +optional
	Entries int64 `json:"entries,omitempty"`
	// changes counts what normalization rewrote, by kind.
	// +optional
	Changes map[string]int64 `json:"changes,omitempty"`
	// sourceRevision is the revision of the sourceRef artifact the layer
	// was built from (e.g. main@sha1:...).
	// +optional
	SourceRevision string `json:"sourceRevision,omitempty"`
}

// LastBuild describes one completed build.
type LastBuild struct {
	// startTime of the build.
	StartTime metav1.Time `json:"startTime"`
	// completionTime of the build.
	CompletionTime metav1.Time `json:"completionTime"`
	// duration of the build.
	Duration metav1.Duration `json:"duration"`
	// result: Pushed, or UpToDate when the registry already held the digest.
	Result BuildResult `json:"result"`
	// bytesIn fetched from sources.
	// +optional
	BytesIn int64 `json:"bytesIn,omitempty"`
	// bytesOut uploaded to the registry.
	// +optional
	BytesOut int64 `json:"bytesOut,omitempty"`
}

// HistoryEntry is one pushed digest.
type HistoryEntry struct {
	// digest of the pushed manifest.
	Digest string `json:"digest"`
	// inputDigest it was built from.
	InputDigest string `json:"inputDigest"`
	// time it was pushed.
	Time metav1.Time `json:"time"`
}

// ImageBuild builds an OCI image from a base, layer tarballs and config, and
// pushes it. kiln records every digest in status.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ib,categories=kiln
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].status"
// +kubebuilder:printcolumn:name="Image",type="string",JSONPath=".status.image"
// +kubebuilder:printcolumn:name="Platforms",type="string",JSONPath=".status.platforms",priority=0
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type ImageBuild struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired image.
	// +required
	Spec ImageBuildSpec `json:"spec"`
	// status is what was built and pushed.
	// +optional
	// +kubebuilder:default={"observedGeneration":-1}
	Status ImageBuildStatus `json:"status,omitempty"`
}

// ImageBuildList is a list of ImageBuilds.
// +kubebuilder:object:root=true
type ImageBuildList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageBuild `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ImageBuild{}, &ImageBuildList{})
}
