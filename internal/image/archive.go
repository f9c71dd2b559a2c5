package image

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/iox"
	"github.com/kiln-build/kiln/internal/layer"
)

// maxJSON caps each JSON document read from an archive (manifest.json,
// index.json, image manifests, configs): they are held in memory.
const maxJSON = 4 << 20

// topLevelJSON are the archive members kept in memory rather than stored.
var topLevelJSON = map[string]bool{
	"manifest.json": true, "index.json": true, "oci-layout": true, "repositories": true,
}

// FromArchive reads a `docker save` tarball or an OCI image-layout tarball,
// uncompressed or compressed with gzip, zstd, xz or bzip2, decompressing it
// once as it streams by: every blob member (blobs/<alg>/<hex>, <id>/layer.tar,
// the config JSON) goes straight into the blob store, the small top-level
// JSON files stay in memory. Uncompressed layer tars (all docker-save
// layers, and uncompressed OCI layers) are compressed with deterministic
// gzip on the way in, so the base's layers are compressed blobs with the
// same DiffIDs. When the archive holds several images, the one for p is
// chosen. Bad archives are permanent InvalidArchive errors naming the member;
// an archive beyond opts' limits is a permanent LimitExceeded naming
// base.archive and the limit, and leaves nothing in the store's temp dir.
//
// The blobs the base uses stay pinned in the store until Base.Release.
func FromArchive(ctx context.Context, r io.Reader, store *blobstore.Store, p v1.Platform, name string, opts ArchiveOptions) (*Base, error) {
	bs, err := FromArchivePlatforms(ctx, r, store, []v1.Platform{p}, name, opts)
	if err != nil {
		return nil, err
	}
	return bs[0], nil
}

// FromArchivePlatforms is FromArchive for several platforms: the archive is
// read once and the image for each of ps is chosen from it. The bases share
// the archive's pins: Release them all once the build is done.
func FromArchivePlatforms(ctx context.Context, r io.Reader, store *blobstore.Store, ps []v1.Platform, name string, opts ArchiveOptions) ([]*Base, error) {
	if store == nil {
		return nil, errors.New("loading base " + name + ": no blob store")
	}
	// src remembers the archive source's last error, so that it can be told
	// apart from a format error, and counts its bytes for MaxRatio.
	src := iox.NewReader(r)
	rc, alg, err := compression.Open(src, compression.Auto, opts.Limits.ReaderOptions())
	if err != nil {
		return nil, archiveErr(name, "", src, err)
	}
	defer rc.Close()
	lim := opts.Limits.WithDefaults()
	ar := &archive{
		ctx: ctx, store: store, name: name, src: src, budget: memberBudget{lim: lim},
		members: map[string]*member{}, byDigest: map[v1.Hash]*member{},
		json: map[string][]byte{}, links: map[string]string{}, pins: map[v1.Hash][]func(){},
	}
	defer ar.releaseUnused()
	var compressed func() int64 // MaxRatio only means something for a compressed archive
	if alg != compression.None {
		compressed = src.Count
	}
	in := layer.NewLimitReader(iox.ContextReader(ctx, rc), lim, compressed, "")
	if err := ar.read(in); err != nil {
		return nil, err
	}
	out := make([]*Base, len(ps))
	for i, p := range ps {
		b, err := ar.build(p)
		if err != nil {
			// The bases built so far are dropped unreleased: releaseUnused
			// unpins every blob once, as for any failed load.
			ar.used = nil
			return nil, err
		}
		if alg != compression.None {
			b.Notes = append(b.Notes, fmt.Sprintf("base archive was %s-compressed; decompressed once while loading", alg))
		}
		out[i] = b
	}
	return out, nil
}

// member is one stored archive file.
type member struct {
	path string
	// raw is the sha256 of the member's bytes as they are in the archive.
	raw v1.Hash
	// blob and size describe what is in the store: the member itself, or
	// its gzip encoding when gzipped is set (then raw is the DiffID).
	blob    v1.Hash
	size    int64
	gzipped bool
	// alg is the member's detected compression; "" when it is not a tar
	// stream at all (JSON).
	alg compression.Algorithm
}

type archive struct {
	ctx      context.Context
	store    *blobstore.Store
	name     string
	src      *iox.Reader
	members  map[string]*member
	byDigest map[v1.Hash]*member // by raw digest
	json     map[string][]byte
	links    map[string]string // member path -> target path
	pins     map[v1.Hash][]func()
	used     map[v1.Hash]bool // blobs the built bases refer to; pins kept
	handed   map[v1.Hash]bool // used blobs whose pins a built base releases
	buf      *bufio.Reader
	budget   memberBudget
}

// read streams the tar once.
func (ar *archive) read(r io.Reader) error {
	tr := tar.NewReader(r)
	ar.buf = bufio.NewReaderSize(nil, 256<<10)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return archiveErr(ar.name, "", ar.src, err)
		}
		name := cleanMember(hdr.Name)
		if err := ar.budget.admit(hdr, name); err != nil {
			return archiveErr(ar.name, "", ar.src, err)
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			err = ar.readFile(name, tr)
		case tar.TypeSymlink:
			ar.links[name] = cleanMember(path.Join(path.Dir(name), hdr.Linkname))
		case tar.TypeLink:
			ar.links[name] = cleanMember(hdr.Linkname)
		}
		if err != nil {
			return err
		}
	}
}

func cleanMember(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

func (ar *archive) readFile(name string, r io.Reader) error {
	switch {
	case topLevelJSON[name]:
		data, err := io.ReadAll(io.LimitReader(r, maxJSON+1))
		if err != nil {
			return archiveErr(ar.name, name, ar.src, err)
		}
		if len(data) > maxJSON {
			return failure.Permanentf(failure.InvalidArchive, "base %s: member %s is larger than %d MiB", ar.name, name, maxJSON>>20)
		}
		ar.json[name] = data
		return nil
	case isBlobMember(name):
		return ar.storeMember(name, r)
	default:
		// Legacy docker-save metadata (<id>/json, <id>/VERSION): not needed.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return archiveErr(ar.name, name, ar.src, err)
		}
		return nil
	}
}

// isBlobMember reports whether a member is content kiln may need. Writers
// disagree on names — OCI layouts use blobs/<alg>/<hex>, legacy docker save
// <id>/layer.tar and <hex>.json, go-containerregistry's tarball "sha256:<hex>"
// configs and "<hex>.tar.gz" layers — so everything is kept except the
// legacy per-layer metadata (<id>/json, <id>/VERSION) nothing references.
func isBlobMember(name string) bool {
	base := path.Base(name)
	return !(strings.Contains(name, "/") && !strings.HasPrefix(name, "blobs/") && (base == "json" || base == "VERSION"))
}

// expectedDigest returns the digest a content-addressed member name claims.
func expectedDigest(name string) (v1.Hash, bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 3 || parts[0] != "blobs" {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash(parts[1] + ":" + parts[2])
	return h, err == nil
}

// storeMember writes a member into the store: an uncompressed tar as gzip,
// anything else as it is.
func (ar *archive) storeMember(name string, r io.Reader) error {
	ar.buf.Reset(r)
	alg, err := compression.Detect(ar.buf)
	if err != nil {
		if !failure.IsPermanent(err) {
			return archiveErr(ar.name, name, ar.src, err)
		}
		alg = "" // JSON, or anything else that is not a tar stream
	}
	want, named := expectedDigest(name)
	if named && want.Algorithm != "sha256" {
		return failure.Permanentf(failure.InvalidArchive, "base %s: member %s: only sha256 blobs are supported", ar.name, name)
	}
	m := &member{path: name, alg: alg}
	if alg == compression.None {
		err = ar.storeGzipped(m, ar.buf)
	} else {
		err = ar.storeRaw(m, ar.buf)
	}
	if err != nil {
		return err
	}
	if named && m.raw != want {
		return failure.Permanentf(failure.InvalidArchive,
			"base %s: member %s has digest %s, not the one its name says", ar.name, name, m.raw)
	}
	ar.members[name] = m
	ar.byDigest[m.raw] = m
	return nil
}

func (ar *archive) storeRaw(m *member, r io.Reader) error {
	w, err := ar.store.NewWriter()
	if err != nil {
		return fmt.Errorf("loading base %s: %w", ar.name, err)
	}
	defer w.Abort()
	sink := iox.NewWriter(w)
	if _, err := io.Copy(sink, r); err != nil {
		return ar.copyErr(m.path, sink, err)
	}
	d, release, err := w.CommitAndPin(v1.Hash{})
	if err != nil {
		return fmt.Errorf("loading base %s: storing %s: %w", ar.name, m.path, err)
	}
	ar.pins[d] = append(ar.pins[d], release)
	m.raw, m.blob, m.size = d, d, w.Size()
	return nil
}

// storeGzipped compresses an uncompressed layer tar once, deterministically,
// hashing the tar on the way: that hash is the layer's DiffID.
func (ar *archive) storeGzipped(m *member, r io.Reader) error {
	w, err := ar.store.NewWriter()
	if err != nil {
		return fmt.Errorf("loading base %s: %w", ar.name, err)
	}
	defer w.Abort()
	zw, err := compression.NewWriter(w, compression.Gzip)
	if err != nil {
		return fmt.Errorf("loading base %s: %w", ar.name, err)
	}
	h := sha256.New()
	sink := iox.NewWriter(zw)
	_, err = io.Copy(io.MultiWriter(h, sink), r)
	if cerr := zw.Close(); err == nil && cerr != nil {
		return fmt.Errorf("loading base %s: compressing %s: %w", ar.name, m.path, cerr)
	}
	if err != nil {
		return ar.copyErr(m.path, sink, err)
	}
	d, release, err := w.CommitAndPin(v1.Hash{})
	if err != nil {
		return fmt.Errorf("loading base %s: storing %s: %w", ar.name, m.path, err)
	}
	ar.pins[d] = append(ar.pins[d], release)
	m.raw = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	m.blob, m.size, m.gzipped = d, w.Size(), true
	return nil
}

// resolve finds a member by path, following links.
func (ar *archive) resolve(p string) (*member, error) {
	p = cleanMember(p)
	for hops := 0; hops < 16; hops++ {
		if m, ok := ar.members[p]; ok {
			return m, nil
		}
		next, ok := ar.links[p]
		if !ok {
			break
		}
		p = next
	}
	return nil, failure.Permanentf(failure.InvalidArchive, "base %s: member %s is missing from the archive", ar.name, p)
}

// blobByDigest finds a stored member by its raw digest.
func (ar *archive) blobByDigest(d v1.Hash, what string) (*member, error) {
	if m, ok := ar.byDigest[d]; ok {
		return m, nil
	}
	return nil, failure.Permanentf(failure.InvalidArchive, "base %s: %s (blobs/%s/%s) is missing from the archive", ar.name, what, d.Algorithm, d.Hex)
}

// readJSON reads a stored member that is a JSON document into v.
func (ar *archive) readJSON(m *member, v any) error {
	if m.size > maxJSON {
		return failure.Permanentf(failure.InvalidArchive, "base %s: member %s is larger than %d MiB", ar.name, m.path, maxJSON>>20)
	}
	rc, err := ar.store.Open(m.blob)
	if err != nil {
		return fmt.Errorf("loading base %s: %w", ar.name, err)
	}
	defer rc.Close()
	if err := json.NewDecoder(io.LimitReader(rc, maxJSON)).Decode(v); err != nil {
		return failure.Permanentf(failure.InvalidArchive, "base %s: member %s is not valid JSON: %v", ar.name, m.path, err)
	}
	return nil
}

func (ar *archive) use(d v1.Hash) {
	if ar.used == nil {
		ar.used = map[v1.Hash]bool{}
	}
	ar.used[d] = true
}

// releaseUnused unpins every blob the base does not use (all of them when
// loading failed).
func (ar *archive) releaseUnused() {
	for d, rs := range ar.pins {
		if ar.used[d] {
			continue
		}
		for _, r := range rs {
			r()
		}
	}
}

// pinsOf returns the release functions of the used blobs not handed to an
// earlier base of the same archive (FromArchivePlatforms), for
// Base.Release: each pin is released exactly once.
func (ar *archive) pinsOf() []func() {
	var out []func()
	for d := range ar.used {
		if ar.handed[d] {
			continue
		}
		if ar.handed == nil {
			ar.handed = map[v1.Hash]bool{}
		}
		ar.handed[d] = true
		out = append(out, ar.pins[d]...)
	}
	return out
}

// archiveErr classifies an error met while reading the archive: a failing
// source keeps its own classification (a dropped connection is retried), a
// limit stays LimitExceeded, anything else is a permanent InvalidArchive
// naming the member.
func archiveErr(name, memberName string, src *iox.Reader, err error) error {
	if lerr := limitErr(name, memberName, err); lerr != nil {
		return lerr
	}
	where := "base " + name
	if memberName != "" {
		where += ": member " + memberName
	}
	if src.Err() != nil && errors.Is(err, src.Err()) {
		return fmt.Errorf("%s: reading the archive: %w", where, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", where, err)
	}
	var fe *failure.Error
	if errors.As(err, &fe) && !fe.Permanent {
		return fmt.Errorf("%s: %w", where, err)
	}
	return failure.Permanent(failure.InvalidArchive, fmt.Errorf("%s: not a valid image archive: %w", where, err))
}

// copyErr reports a failed copy of a member into the store: a failing
// store (disk full) is a local error, anything else comes from the archive.
func (ar *archive) copyErr(memberName string, sink *iox.Writer, err error) error {
	if sink.Err() != nil && errors.Is(err, sink.Err()) {
		return fmt.Errorf("loading base %s: storing member %s: %w", ar.name, memberName, err)
	}
	return archiveErr(ar.name, memberName, ar.src, err)
}
