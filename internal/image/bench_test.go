package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/testkit"
)

// benchDockerSave is an uncompressed docker-save archive with one layer of
// n bytes of half-compressible data.
func benchDockerSave(b *testing.B, n int) []byte {
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		if i%2 == 0 {
			data[i] = byte(r.IntN(256))
		} else {
			data[i] = 'a'
		}
	}
	t := &testing.T{}
	layer := testkit.Files(t, "blob", string(data))
	cf := &v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{testkit.Hash(layer)}}}
	raw, _ := json.Marshal(cf)
	manifest := `[{"Config":"c.json","Layers":["l/layer.tar"]}]`
	return writeTar(t, []tarEntry{{name: "l/layer.tar", data: layer}, {name: "c.json", data: raw}, {name: "manifest.json", data: []byte(manifest)}})
}

func BenchmarkFromArchiveDockerSave64MiB(b *testing.B) {
	archive := benchDockerSave(b, 64<<20)
	b.SetBytes(int64(len(archive)))
	for b.Loop() {
		s, err := openBenchStore(b)
		if err != nil {
			b.Fatal(err)
		}
		base, err := FromArchive(context.Background(), bytes.NewReader(archive), s, DefaultPlatform, "bench", ArchiveOptions{})
		if err != nil {
			b.Fatal(err)
		}
		base.Release()
	}
}

func BenchmarkAssemble100Layers(b *testing.B) {
	var adds []Addition
	for i := range 100 {
		a := Addition{Name: fmt.Sprintf("l%d", i), SourceKind: "url", Size: 10, MediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
			Digest: testkit.Hash([]byte{byte(i)}), DiffID: testkit.Hash([]byte{byte(i), 1}), Path: "/nonexistent"}
		adds = append(adds, a)
	}
	s := Spec{Base: Scratch(DefaultPlatform), Additions: adds}
	for b.Loop() {
		if _, err := Assemble(s); err != nil {
			b.Fatal(err)
		}
	}
}

func openBenchStore(b *testing.B) (*blobstore.Store, error) {
	return blobstore.Open(b.TempDir(), blobstore.Options{})
}
