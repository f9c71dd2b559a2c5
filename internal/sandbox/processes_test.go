package sandbox

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// startTestRegistry starts the real registry. A missing binary fails the
// test (never skips) with the command that builds it.
func startTestRegistry(t *testing.T) *Registry {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckRegistryBinary(RegistryBinary(root)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := StartRegistry(ctx, RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(r.Dir()); !os.IsNotExist(err) {
			t.Errorf("registry dir %s left behind (%v)", r.Dir(), err)
		}
	})
	return r
}

func TestRegistryPushBasesAndCountManifestPuts(t *testing.T) {
	r := startTestRegistry(t)
	if !strings.HasPrefix(r.Addr(), "127.0.0.1:") {
		t.Fatalf("addr %q", r.Addr())
	}
	ctx := context.Background()
	builds := []*kilnv1.ImageBuild{
		{Spec: kilnv1.ImageBuildSpec{Base: &kilnv1.Base{Image: r.Addr() + "/library/debian:12-slim", Platform: "linux/amd64"}}},
		{Spec: kilnv1.ImageBuildSpec{Base: &kilnv1.Base{Image: r.Addr() + "/windows/nanoserver:ltsc2022", Platform: "windows/amd64:10.0.20348"}}},
		{Spec: kilnv1.ImageBuildSpec{Base: &kilnv1.Base{Image: "scratch"}}},
	}
	pushed, err := PushBases(ctx, builds)
	if err != nil {
		t.Fatal(err)
	}
	if len(pushed) != 2 {
		t.Fatalf("pushed %q, want the two non-scratch bases", pushed)
	}
	// One manifest for debian; two children plus the index for windows.
	if n, err := r.ManifestPuts(); err != nil || n != 4 {
		t.Errorf("manifest PUTs = %d (%v), want 4", n, err)
	}

	ref, err := name.ParseReference(r.Addr() + "/library/debian:12-slim")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || len(cf.Config.Env) != 1 || cf.Config.Env[0] != "PATH="+LinuxBasePath {
		t.Errorf("debian base config: os %q arch %q env %q", cf.OS, cf.Architecture, cf.Config.Env)
	}

	wref, _ := name.ParseReference(r.Addr() + "/windows/nanoserver:ltsc2022")
	idx, err := remote.Index(wref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 || im.Manifests[0].Platform.OS != "windows" || im.Manifests[0].Platform.OSVersion != WindowsBaseOSVersion {
		t.Errorf("windows index: %+v", im.Manifests)
	}
	if _, err := os.Stat(r.LogPath()); err != nil {
		t.Error(err)
	}
}

func TestParseAccessLine(t *testing.T) {
	cases := []struct {
		line string
		want Request
		ok   bool
	}{
		{`127.0.0.1 - - [22/Nov/2026:20:00:00 +0000] "PUT /v2/team/app/manifests/1.0 HTTP/1.1" 201 0 "" "go-containerregistry/v0.22.1"`,
			Request{"PUT", "/v2/team/app/manifests/1.0", 201}, true},
		{`127.0.0.1 - - [22/Nov/2026:20:00:00 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "Go-http-client/1.1"`,
			Request{"GET", "/v2/", 200}, true},
		{`garbage`, Request{}, false},
		{`x "GET"`, Request{}, false},
	}
	for _, c := range cases {
		got, ok := parseAccessLine(c.line)
		if ok != c.ok || got != c.want {
			t.Errorf("parseAccessLine(%q) = %+v, %v; want %+v, %v", c.line, got, ok, c.want, c.ok)
		}
	}
}

func TestStartRegistryMissingBinary(t *testing.T) {
	_, err := StartRegistry(context.Background(), RegistryOptions{Binary: filepath.Join(t.TempDir(), "registry")})
	if err == nil || !strings.Contains(err.Error(), "is missing: run hack/registry.sh") {
		t.Fatalf("got %v", err)
	}
}

func TestControlPlaneAssetsMissing(t *testing.T) {
	err := CheckControlPlaneAssets(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "run `make envtest-assets`") {
		t.Fatalf("got %v", err)
	}
}

func TestFileServerServesAndCounts(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.tar"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err := StartFileServer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	resp, err := http.Get(fs.URL("a.tar"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	// Conditional GET: Last-Modified from http.ServeContent.
	req, _ := http.NewRequest(http.MethodGet, fs.URL("/a.tar"), nil)
	req.Header.Set("If-Modified-Since", resp.Header.Get("Last-Modified"))
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET: %d, want 304", resp2.StatusCode)
	}
	resp3, err := http.Get(fs.URL("missing.tar"))
	if err != nil {
		t.Fatal(err)
	}
	resp3.Body.Close()
	if resp3.StatusCode != http.StatusNotFound {
		t.Errorf("missing: %d", resp3.StatusCode)
	}
	if n := fs.Requests("a.tar"); n != 2 {
		t.Errorf("requests for a.tar = %d, want 2", n)
	}
	if n := fs.Requests("missing.tar"); n != 1 {
		t.Errorf("requests for missing.tar = %d, want 1", n)
	}
	if err := fs.Close(); err != nil {
		t.Error(err)
	}
	if err := fs.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
