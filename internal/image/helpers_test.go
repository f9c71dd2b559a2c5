package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/kiln-build/kiln/internal/registry"
)

// countingRegistry is an in-process registry that counts requests by
// method and path kind.
type countingRegistry struct {
	host string
	mu   sync.Mutex
	reqs map[string]int // "PUT manifests", "POST blobs", ...
}

func newRegistry(t *testing.T) *countingRegistry {
	t.Helper()
	r := &countingRegistry{reqs: map[string]int{}}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		kind := "other"
		switch {
		case strings.Contains(req.URL.Path, "/manifests/"):
			kind = "manifests"
		case strings.Contains(req.URL.Path, "/blobs/"):
			kind = "blobs"
		}
		r.mu.Lock()
		r.reqs[req.Method+" "+kind]++
		r.mu.Unlock()
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *countingRegistry) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs[key]
}

func regOptions() registry.Options {
	return registry.Options{Keychain: authn.NewMultiKeychain()}
}

func remoteOpts() []remote.Option {
	return registry.RemoteOptions(context.Background(), regOptions())
}

// tarOf builds an uncompressed tar of files (name -> content).
func tarOf(t *testing.T, files ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i+1 < len(files); i += 2 {
		hdr := &tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// addition writes a gzip layer of files to a temp file, as the layer
// pipeline would, and describes it.
func addition(t *testing.T, name string, files ...string) Addition {
	t.Helper()
	raw := tarOf(t, files...)
	blob := gzipBytes(t, raw)
	p := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	return Addition{
		Name: name, SourceKind: "url",
		Digest: sha(blob), DiffID: sha(raw), Size: int64(len(blob)),
		MediaType: types.OCILayer, Path: p,
	}
}

func mustConfig(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

func mustManifest(t *testing.T, img v1.Image) *v1.Manifest {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustAssemble(t *testing.T, s Spec) *Assembled {
	t.Helper()
	a, err := Assemble(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(a); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return a
}

// isDocker reports whether the base's manifest has the Docker v2s2 media type.
func isDocker(t *testing.T, b *Base) bool {
	t.Helper()
	mt, err := b.Image.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return mt == types.DockerManifestSchema2
}
