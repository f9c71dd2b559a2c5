//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/testkit"
	"github.com/klauspost/compress/zstd"
)

// wantImage is what an independent client must find in a pushed image.
type wantImage struct {
	// tree is the exact rootfs; nil skips the unpack (Windows images, which
	// umoci does not unpack).
	tree       tree
	env        []string
	entrypoint []string
	cmd        []string
	user       string
	workingDir string
	labels     map[string]string
	os, arch   string
	osVersion  string
	// diffIDs, when set, must be the config's rootfs.diff_ids exactly.
	diffIDs []string
	// pick are skopeo's global platform overrides (--override-arch arm64)
	// choosing the child of an index ref.
	pick []string
}

// pulled is an image copied out of the registry by skopeo into an OCI layout.
type pulled struct {
	dir      string
	manifest v1.Manifest
	config   v1.ConfigFile
}

// checkImage is the check every scenario ends with: skopeo copies ref
// (repo@digest) out of the registry into an OCI layout, umoci unpacks it
// (verifying every layer's DiffID against the config) and the rootfs must
// equal want.tree exactly; the config must carry what the spec declared.
func checkImage(t testing.TB, ref string, want wantImage) *pulled {
	t.Helper()
	defer step(t, "skopeo copy + umoci unpack + compare")()
	dir, err := os.MkdirTemp(s.work, "image-")
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "oci")
	args := append(append([]string{"--insecure-policy"}, want.pick...), "copy", "--quiet", "--src-tls-verify=false",
		"docker://"+ref, "oci:"+layout+":e2e")
	run(t, 5*time.Minute, "skopeo", args...)
	p := readLayout(t, layout, "e2e")
	p.dir = dir
	checkConfig(t, ref, p.config, want)
	if want.tree == nil {
		return p
	}
	bundle := filepath.Join(dir, "bundle")
	run(t, 5*time.Minute, "umoci", "unpack", "--rootless", "--image", layout+":e2e", bundle)
	got := readTree(t, filepath.Join(bundle, "rootfs"))
	if d := diffTrees(want.tree, got, 30); len(d) > 0 {
		t.Errorf("%s: unpacked rootfs differs from the expected tree (%d expected paths, %d unpacked):\n  %s",
			ref, len(want.tree), len(got), strings.Join(d, "\n  "))
	} else {
		t.Logf("%s: rootfs of %d paths equals the expected tree", ref, len(got))
	}
	checkRuntimeSpec(t, ref, filepath.Join(bundle, "config.json"), want)
	if !t.Failed() && os.Getenv("KILN_E2E_KEEP") == "" {
		_ = os.RemoveAll(dir) // big layers: keep the disk free for the next scenario
	}
	return p
}

func checkConfig(t testing.TB, ref string, cfg v1.ConfigFile, want wantImage) {
	t.Helper()
	c := cfg.Config
	eq := func(field string, got, want any) {
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: config %s = %#v, want %#v", ref, field, got, want)
		}
	}
	eq("env", c.Env, want.env)
	eq("entrypoint", c.Entrypoint, want.entrypoint)
	eq("cmd", c.Cmd, want.cmd)
	eq("user", c.User, want.user)
	eq("workingDir", c.WorkingDir, want.workingDir)
	if len(want.labels) > 0 || len(c.Labels) > 0 {
		eq("labels", c.Labels, want.labels)
	}
	eq("os", cfg.OS, want.os)
	eq("architecture", cfg.Architecture, want.arch)
	if want.osVersion != "" {
		eq("os.version", cfg.OSVersion, want.osVersion)
	}
	if want.diffIDs != nil {
		var got []string
		for _, d := range cfg.RootFS.DiffIDs {
			got = append(got, d.String())
		}
		eq("rootfs.diff_ids", got, want.diffIDs)
	}
}

// checkRuntimeSpec reads the OCI runtime spec umoci generated from the
// image config: what a runtime would actually execute.
func checkRuntimeSpec(t testing.TB, ref, path string, want wantImage) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading umoci's runtime spec: %v", err)
	}
	var spec struct {
		Process struct {
			Env  []string `json:"env"`
			Args []string `json:"args"`
			Cwd  string   `json:"cwd"`
		} `json:"process"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatalf("parsing umoci's runtime spec: %v", err)
	}
	args := append(append([]string{}, want.entrypoint...), want.cmd...)
	if len(args) > 0 && !reflect.DeepEqual(spec.Process.Args, args) {
		t.Errorf("%s: runtime spec process.args = %q, want %q", ref, spec.Process.Args, args)
	}
	cwd := want.workingDir
	if cwd == "" {
		cwd = "/"
	}
	if spec.Process.Cwd != cwd {
		t.Errorf("%s: runtime spec process.cwd = %q, want %q", ref, spec.Process.Cwd, cwd)
	}
	for _, e := range want.env {
		if !contains(spec.Process.Env, e) {
			t.Errorf("%s: runtime spec process.env %q lacks %q", ref, spec.Process.Env, e)
		}
	}
	for k, v := range want.labels {
		if got, ok := spec.Annotations[k]; !ok || got != v {
			t.Errorf("%s: runtime spec annotation %s = %q, want label value %q", ref, k, got, v)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// readLayout reads the manifest and config of tag from an OCI layout.
func readLayout(t testing.TB, layout, tag string) *pulled {
	t.Helper()
	var index v1.IndexManifest
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	for _, d := range index.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] != tag {
			continue
		}
		p := &pulled{}
		readJSON(t, blobPath(layout, d.Digest), &p.manifest)
		readJSON(t, blobPath(layout, p.manifest.Config.Digest), &p.config)
		return p
	}
	t.Fatalf("OCI layout %s has no image tagged %q", layout, tag)
	return nil
}

func blobPath(layout string, d v1.Hash) string {
	return filepath.Join(layout, "blobs", d.Algorithm, d.Hex)
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
}

// layerTar returns the uncompressed tar of layer i of a pulled image, after
// checking that its sha256 is the config's DiffID (what umoci checks, done
// here for images umoci does not unpack).
func (p *pulled) layerTar(t testing.TB, i int) []byte {
	t.Helper()
	layout := filepath.Join(p.dir, "oci")
	f, err := os.Open(blobPath(layout, p.manifest.Layers[i].Digest))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Independent decoders, not kiln's own: the standard library's gzip
	// and klauspost's zstd, chosen by the media type the manifest declares.
	var r io.Reader = f
	switch mt := string(p.manifest.Layers[i].MediaType); {
	case strings.HasSuffix(mt, "gzip"):
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("layer %d (%s): %v", i, mt, err)
		}
		r = zr
	case strings.HasSuffix(mt, "zstd"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			t.Fatalf("layer %d (%s): %v", i, mt, err)
		}
		defer zr.Close()
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("layer %d: decompressing: %v", i, err)
	}
	if got, want := "sha256:"+testkit.Hex(b), p.config.RootFS.DiffIDs[i].String(); got != want {
		t.Fatalf("layer %d: sha256 of the uncompressed tar is %s, config's diff_id is %s", i, got, want)
	}
	return b
}

// rootfs applies the image's layers in order, each checked against its
// DiffID, the way an unpacker would.
func (p *pulled) rootfs(t testing.TB) tree {
	t.Helper()
	out := tree{}
	for i := range p.manifest.Layers {
		out.apply(t, p.layerTar(t, i))
	}
	return out
}

// tarPaths lists the entry names of a tar, in order.
func tarPaths(t testing.TB, b []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading layer tar: %v", err)
		}
		out = append(out, h.Name)
	}
}

// readTree reads an unpacked rootfs.
func readTree(t testing.TB, root string) tree {
	t.Helper()
	out := tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		mode := fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = node{Type: "symlink", Target: target}
		case fi.IsDir():
			out[rel] = node{Type: "dir", Mode: mode}
		case fi.Mode().IsRegular():
			sum, err := fileSHA256(p)
			if err != nil {
				return err
			}
			out[rel] = node{Type: "file", Mode: mode, SHA256: sum, Size: fi.Size()}
		default:
			out[rel] = node{Type: fi.Mode().Type().String(), Mode: mode}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading unpacked rootfs: %v", err)
	}
	return out
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// run runs an independent client and fails the test with its output.
func run(t testing.TB, timeout time.Duration, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.Bytes()
}

// registryRequests returns the access log lines whose path is under repo.
func registryRequests(t testing.TB, repo string) []requestLine {
	t.Helper()
	reqs, err := s.reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	var out []requestLine
	for _, r := range reqs {
		if strings.HasPrefix(r.Path, "/v2/"+repo+"/") {
			out = append(out, requestLine{r.Method, r.Path, r.Status})
		}
	}
	return out
}

type requestLine struct {
	Method string
	Path   string
	Status int
}

// writes are the requests that change a repository.
func writes(reqs []requestLine) []requestLine {
	var out []requestLine
	for _, r := range reqs {
		if r.Method == http.MethodPut || r.Method == http.MethodPost || r.Method == http.MethodPatch || r.Method == http.MethodDelete {
			out = append(out, r)
		}
	}
	return out
}

func manifestPuts(reqs []requestLine) int {
	n := 0
	for _, r := range reqs {
		if r.Method == http.MethodPut && strings.Contains(r.Path, "/manifests/") {
			n++
		}
	}
	return n
}

// checkRegistryIntegrity walks the registry's storage: every manifest
// revision of every repository must have its config and layers (or its
// child manifests) present in that repository. A retried or killed push
// must never leave a manifest that points at a missing blob.
func checkRegistryIntegrity(t testing.TB) {
	t.Helper()
	repos := filepath.Join(s.reg.Dir(), "storage", "docker", "registry", "v2", "repositories")
	checked := 0
	err := filepath.WalkDir(repos, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() != "link" || !strings.Contains(p, "/_manifests/revisions/sha256/") {
			return nil
		}
		rel, _ := filepath.Rel(repos, p)
		repo, rest, _ := strings.Cut(filepath.ToSlash(rel), "/_manifests/revisions/sha256/")
		dgst := "sha256:" + strings.TrimSuffix(rest, "/link")
		checkManifestBlobs(t, repo, dgst)
		checked++
		return nil
	})
	if err != nil {
		t.Fatalf("walking registry storage: %v", err)
	}
	t.Logf("registry integrity: %d manifests checked, all blobs present", checked)
}

var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

func checkManifestBlobs(t testing.TB, repo, dgst string) {
	t.Helper()
	base := "http://" + s.reg.Addr() + "/v2/" + repo
	req, _ := http.NewRequest(http.MethodGet, base+"/manifests/"+dgst, nil)
	req.Header.Set("Accept", manifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("registry: %s@%s is in storage but GET answers %d", repo, dgst, resp.StatusCode)
		return
	}
	var m struct {
		Config    *v1.Descriptor  `json:"config"`
		Layers    []v1.Descriptor `json:"layers"`
		Manifests []v1.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("registry: %s@%s: %v", repo, dgst, err)
		return
	}
	var want []string
	if m.Config != nil {
		want = append(want, "blobs/"+m.Config.Digest.String())
	}
	for _, l := range m.Layers {
		if len(l.URLs) == 0 { // foreign layers live elsewhere by design
			want = append(want, "blobs/"+l.Digest.String())
		}
	}
	for _, c := range m.Manifests {
		want = append(want, "manifests/"+c.Digest.String())
	}
	for _, w := range want {
		req, _ := http.NewRequest(http.MethodHead, base+"/"+w, nil)
		req.Header.Set("Accept", manifestAccept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("registry: manifest %s@%s references %s, which answers %d", repo, dgst, w, resp.StatusCode)
		}
	}
}

// noPushes fails when the registry saw any write under repo.
func noPushes(t testing.TB, repo string) {
	t.Helper()
	if w := writes(registryRequests(t, repo)); len(w) > 0 {
		t.Errorf("repository %s: expected nothing pushed, the registry saw %d writes, first %v", repo, len(w), w[0])
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
