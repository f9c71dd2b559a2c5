package testkit

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const module = "github.com/kiln-build/kiln"

// goList runs `go list` in the module root with args.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

// The kit must stay out of the shipped binary: bin/kiln is built from the
// module root.
func TestNotLinkedIntoKiln(t *testing.T) {
	for _, p := range goList(t, "-deps", ".") {
		if p == module+"/internal/testkit" || strings.HasPrefix(p, module+"/internal/testkit/") {
			t.Fatalf("bin/kiln links %s; only tests may import the test kit", p)
		}
	}
}

// Any package's internal tests may import the kit only while the kit
// imports no kiln package (the kube helpers: the API types alone).
func TestImportsNoKilnPackage(t *testing.T) {
	allowed := map[string]map[string]bool{
		module + "/internal/testkit":      {module + "/internal/testkit": true},
		module + "/internal/testkit/kube": {module + "/internal/testkit/kube": true, module + "/api/v1alpha1": true},
	}
	for pkg, ok := range allowed {
		for _, dep := range goList(t, "-deps", pkg) {
			if strings.HasPrefix(dep, module) && !ok[dep] {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}

func TestTarDefaults(t *testing.T) {
	b := Tar(t, File("f", "body"), Dir("d/"), Symlink("l", "f"), Hardlink("h", "f"), File("x", "").WithMode(0o755),
		Entry{Name: "lie", Body: "ab", Size: 2})
	want := []struct {
		name string
		typ  byte
		mode int64
		size int64
	}{{"f", tar.TypeReg, 0o644, 4}, {"d/", tar.TypeDir, 0o755, 0}, {"l", tar.TypeSymlink, 0o777, 0},
		{"h", tar.TypeLink, 0o644, 0}, {"x", tar.TypeReg, 0o755, 0}, {"lie", tar.TypeReg, 0o644, 2}}
	tr := tar.NewReader(bytes.NewReader(b))
	for _, w := range want {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("entry %s: %v", w.name, err)
		}
		if h.Name != w.name || h.Typeflag != w.typ || h.Mode != w.mode || h.Size != w.size || !h.ModTime.Equal(Time) {
			t.Errorf("got %s type %c mode %o size %d mtime %s, want %+v", h.Name, h.Typeflag, h.Mode, h.Size, h.ModTime, w)
		}
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("after the last entry: %v, want EOF", err)
	}
}

// Raw headers must be ones archive/tar reads back, or the tests built on
// them test the checksum instead of what they mean to.
func TestRawTarReadsBack(t *testing.T) {
	b := RawTar(Meta('x', PAXRecord("path", "long/name")), Block{Type: tar.TypeReg, Name: "short", Size: 0}.Bytes())
	h, err := tar.NewReader(bytes.NewReader(b)).Next()
	if err != nil || h.Name != "long/name" {
		t.Fatalf("header %+v, err %v; want long/name", h, err)
	}
	if got := PAXRecord("path", "a"); got != "9 path=a\n" {
		t.Errorf("PAXRecord = %q", got)
	}
}

func TestCompressors(t *testing.T) {
	in := bytes.Repeat([]byte("kiln "), 1000)
	for name, out := range map[string][]byte{"gzip": Gzip(t, in), "xz": Xz(t, in), "zstd": Zstd(t, in)} {
		if len(out) == 0 || len(out) >= len(in) {
			t.Errorf("%s: %d bytes from %d", name, len(out), len(in))
		}
	}
	if Digest([]byte("")) != "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("Digest of nothing = %s", Digest(nil))
	}
}

// Blobs are per repository: pushing to one repository does not make the
// blobs exist in another until they are mounted or uploaded there.
func TestRegistryBlobsPerRepository(t *testing.T) {
	reg := NewRegistry(t)
	img, err := random.Image(100, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := name.ParseReference(reg.Host + "/a:1")
	if err := remote.Write(a, img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	for repo, want := range map[string]int{"a": http.StatusOK, "b": http.StatusNotFound} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodHead, reg.URL+"/v2/"+repo+"/blobs/"+d.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("HEAD blob in %s: %d, want %d", repo, resp.StatusCode, want)
		}
	}
	if reg.Count("PUT manifest") != 1 || reg.Writes() == 0 {
		t.Errorf("counts: PUT manifest %d, writes %d", reg.Count("PUT manifest"), reg.Writes())
	}
	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	reg.Reset()
	resp, err := http.Get(reg.URL + "/v2/a/manifests/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || reg.Attempts(http.MethodGet) != 1 || reg.Count(http.MethodGet) != 0 {
		t.Errorf("faulted GET: %d, attempts %d, answered %d", resp.StatusCode, reg.Attempts(http.MethodGet), reg.Count(http.MethodGet))
	}
}

func TestFileServerRevalidates(t *testing.T) {
	fs := NewFileServer(t)
	u := fs.Put("/l.tar", []byte("layer"))
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if etag != `"`+Digest([]byte("layer"))+`"` {
		t.Fatalf("ETag %q", etag)
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified || fs.Gets("/l.tar") != 2 || fs.Downloads("/l.tar") != 1 {
		t.Errorf("conditional GET: %d, gets %d, downloads %d", resp.StatusCode, fs.Gets("/l.tar"), fs.Downloads("/l.tar"))
	}
}
