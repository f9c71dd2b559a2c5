package image

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/testkit"
)

func regOptions() registry.Options {
	return registry.Options{Keychain: authn.NewMultiKeychain()}
}

func remoteOpts() []remote.Option {
	return registry.RemoteOptions(context.Background(), regOptions())
}

// addition writes a gzip layer of files to a temp file, as the layer
// pipeline would, and describes it.
func addition(t *testing.T, name string, files ...string) Addition {
	t.Helper()
	raw := testkit.Files(t, files...)
	blob := testkit.Gzip(t, raw)
	p := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	return Addition{
		Name: name, SourceKind: "url",
		Digest: testkit.Hash(blob), DiffID: testkit.Hash(raw), Size: int64(len(blob)),
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
