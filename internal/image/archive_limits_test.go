package image

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/testkit"
)

func xzDict(t *testing.T, b []byte, dict int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{DictCap: dict}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// emptyMembers is a tar of n empty files: 512 header bytes each, nothing
// for the member budget.
func emptyMembers(t *testing.T, n int) []byte {
	t.Helper()
	var es []tarEntry
	for i := 0; i < n; i++ {
		es = append(es, tarEntry{name: fmt.Sprintf("m%d", i)})
	}
	return writeTar(t, es)
}

func TestFromArchiveLimits(t *testing.T) {
	zeros := make([]byte, 12<<20) // past the 8 MiB before MaxRatio is checked
	bomb := writeTar(t, []tarEntry{{name: "x/layer.tar", data: zeros}})
	big := writeTar(t, []tarEntry{{name: "a/layer.tar", data: make([]byte, 600<<10)}, {name: "b/layer.tar", data: make([]byte, 600<<10)}})
	gzBomb := testkit.Gzip(t, bomb)
	window := writeTar(t, []tarEntry{{name: "x/layer.tar", data: cachedNoise(t, 1536<<10)}})
	tests := []struct {
		name   string
		data   []byte
		opts   ArchiveOptions
		prefix string // the exact message up to the first varying part
		suffix string
		// storesSome: members before the limit was reached were committed
		// (unpinned cache, evicted as usual); otherwise nothing was.
		storesSome bool
	}{
		{"gzip bomb", gzBomb, ArchiveOptions{Limits: layer.Limits{MaxRatio: 100}},
			"base.archive (archive t): reading member x/layer.tar: decompresses to more than 100 times its compressed size (", "; limit MaxRatio)", false},
		{"zstd bomb, default limits", testkit.Zstd(t, bomb), ArchiveOptions{},
			"base.archive (archive t): reading member x/layer.tar: decompresses to more than 1000 times its compressed size (", "; limit MaxRatio)", false},
		{"one member above the size limit", gzBomb, ArchiveOptions{Limits: layer.Limits{MaxUncompressedBytes: 1 << 20}},
			"base.archive (archive t): member x/layer.tar: uncompressed size exceeds 1048576 bytes (limit MaxUncompressedBytes): it is 12582912 bytes, 12582912 with the members before it", "", false},
		{"members adding up above the size limit", big, ArchiveOptions{Limits: layer.Limits{MaxUncompressedBytes: 1 << 20}},
			"base.archive (archive t): member b/layer.tar: uncompressed size exceeds 1048576 bytes (limit MaxUncompressedBytes): it is 614400 bytes, 1228800 with the members before it", "", true},
		{"stream above the size limit", testkit.Gzip(t, emptyMembers(t, 600)), ArchiveOptions{Limits: layer.Limits{MaxUncompressedBytes: 256 << 10}},
			"base.archive (archive t): uncompressed size exceeds 262144 bytes (limit MaxUncompressedBytes)", "", true},
		{"too many entries", emptyMembers(t, 11), ArchiveOptions{Limits: layer.Limits{MaxEntries: 10}},
			"base.archive (archive t): more than 10 entries (limit MaxEntries)", "", true},
		{"zstd window", testkit.ZstdWith(t, window, zstd.WithWindowSize(4<<20)), ArchiveOptions{Limits: layer.Limits{MaxDecoderMemory: 1 << 20}},
			"base.archive (archive t): zstd: window size exceeded (limit 1 MiB)", "", false},
		{"xz dictionary", xzDict(t, window, 1<<20), ArchiveOptions{Limits: layer.Limits{MaxDecoderMemory: 512 << 10}},
			"base.archive (archive t): xz: block 0 needs a 1 MiB dictionary, above the 512 KiB limit", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newStore(t)
			_, err := FromArchive(context.Background(), bytes.NewReader(tt.data), store, DefaultPlatform, "archive t", tt.opts)
			if err == nil {
				t.Fatal("loaded")
			}
			msg := err.Error()
			exact := tt.suffix == ""
			if failure.ReasonOf(err) != failure.LimitExceeded || !failure.IsPermanent(err) ||
				(exact && msg != tt.prefix) || (!exact && (!strings.HasPrefix(msg, tt.prefix) || !strings.HasSuffix(msg, tt.suffix))) {
				t.Fatalf("err = %v (%s)\nwant permanent LimitExceeded %q...%q", err, failure.ReasonOf(err), tt.prefix, tt.suffix)
			}
			assertNoTemps(t, store)
			if !tt.storesSome {
				assertNoBlobs(t, store)
			}
		})
	}
}

// Negative limits disable them, as for layers; the same archive loads.
func TestFromArchiveLimitsDisabled(t *testing.T) {
	archive, _, _ := dockerSave(t)
	in := testkit.Gzip(t, archive)
	tight := ArchiveOptions{Limits: layer.Limits{MaxUncompressedBytes: 4096}}
	if _, err := FromArchive(context.Background(), bytes.NewReader(in), newStore(t), DefaultPlatform, "archive t", tight); failure.ReasonOf(err) != failure.LimitExceeded {
		t.Fatalf("4 KiB limit: %v", err)
	}
	off := ArchiveOptions{Limits: layer.Limits{MaxUncompressedBytes: -1, MaxRatio: -1, MaxEntries: -1}}
	b, err := FromArchive(context.Background(), bytes.NewReader(in), newStore(t), DefaultPlatform, "archive t", off)
	if err != nil {
		t.Fatal(err)
	}
	b.Release()
}

// assertNoBlobs checks that a refused archive committed nothing.
func assertNoBlobs(t *testing.T, s *blobstore.Store) {
	t.Helper()
	// Every blob lives in the directory Path names for any of them.
	blobs, err := filepath.Glob(filepath.Join(filepath.Dir(s.Path(v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)})), "*"))
	if err != nil || len(blobs) != 0 {
		t.Fatalf("blobs stored for a refused archive: %v %v", blobs, err)
	}
}

// cachedNoise returns n bytes that do not compress: a zstd or xz encoder
// then needs its whole window.
func cachedNoise(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
