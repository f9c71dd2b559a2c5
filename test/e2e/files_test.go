//go:build e2e

package e2e

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// Layers without a tarball: a files layer (inline content, a Secret key, a
// ConfigMap key) and a configMapDir layer (data and binaryData). umoci
// unpacks exactly the declared tree with the declared modes, and the
// pushed layer tars (read from skopeo's copy, since a rootless unpack maps
// every owner to the current user) carry the declared owners.
func TestFilesAndConfigMapDirLayers(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	logo := []byte{0x89, 'P', 'N', 'G', 0, 1, 2}
	kube.Create(t, s.k8s,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "site"},
			Data: map[string]string{"index.html": "<h1>kiln</h1>\n"}, BinaryData: map[string][]byte{"logo.png": logo}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "features"},
			Data: map[string]string{"features.json": `{"beta":true}`}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-tls"},
			Data: map[string][]byte{"tls.key": []byte("KEY")}},
	)
	content := "port: 8080\n"
	uid, gid, zero, www := int64(1000), int64(1000), int64(0), int64(101)
	ib := imageBuild(ns, "files", "files/app",
		kilnv1.Layer{Name: "config", UID: &uid, GID: &gid, Source: &kilnv1.Source{Files: []kilnv1.FileEntry{
			{Path: "/etc/app/app.yaml", Content: &content},
			{Path: "/etc/app/tls.key", SecretKeyRef: &kilnv1.KeySelector{Name: "app-tls", Key: "tls.key"}, Mode: "0600", UID: &zero, GID: &zero},
			{Path: "/etc/app/features.json", ConfigMapKeyRef: &kilnv1.KeySelector{Name: "features", Key: "features.json"}, Mode: "0444"},
		}}},
		kilnv1.Layer{Name: "site", FileMode: "0640", DirMode: "0750", GID: &www,
			Source: &kilnv1.Source{ConfigMapDir: &kilnv1.DirSource{Name: "site", TargetDir: "/usr/share/nginx/html"}}},
	)
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "files", 2*time.Minute)

	file := func(mode os.FileMode, body []byte) node {
		return node{Type: "file", Mode: mode, SHA256: testkit.Hex(body), Size: int64(len(body))}
	}
	dir := func(mode os.FileMode) node { return node{Type: "dir", Mode: mode} }
	checkImage(t, digestRef(t, ib), wantImage{
		tree: tree{
			"etc":                             dir(0o755),
			"etc/app":                         dir(0o755),
			"etc/app/app.yaml":                file(0o644, []byte(content)),
			"etc/app/features.json":           file(0o444, []byte(`{"beta":true}`)),
			"etc/app/tls.key":                 file(0o600, []byte("KEY")),
			"usr":                             dir(0o750),
			"usr/share":                       dir(0o750),
			"usr/share/nginx":                 dir(0o750),
			"usr/share/nginx/html":            dir(0o750),
			"usr/share/nginx/html/index.html": file(0o640, []byte("<h1>kiln</h1>\n")),
			"usr/share/nginx/html/logo.png":   file(0o640, logo),
		},
		os: "linux", arch: "amd64",
	})
	mtime := time.Unix(0, 0).Unix()
	want := [][]string{{
		fmt.Sprintf("etc/ 755 1000:1000 %d", mtime),
		fmt.Sprintf("etc/app/ 755 1000:1000 %d", mtime),
		fmt.Sprintf("etc/app/app.yaml 644 1000:1000 %d", mtime),
		fmt.Sprintf("etc/app/features.json 444 1000:1000 %d", mtime),
		fmt.Sprintf("etc/app/tls.key 600 0:0 %d", mtime),
	}, {
		fmt.Sprintf("usr/ 750 0:101 %d", mtime),
		fmt.Sprintf("usr/share/ 750 0:101 %d", mtime),
		fmt.Sprintf("usr/share/nginx/ 750 0:101 %d", mtime),
		fmt.Sprintf("usr/share/nginx/html/ 750 0:101 %d", mtime),
		fmt.Sprintf("usr/share/nginx/html/index.html 640 0:101 %d", mtime),
		fmt.Sprintf("usr/share/nginx/html/logo.png 640 0:101 %d", mtime),
	}}
	got := layerHeaders(t, digestRef(t, ib))
	if len(got) != len(want) {
		t.Fatalf("%d layers, want %d", len(got), len(want))
	}
	for i := range want {
		if strings.Join(got[i], "\n") != strings.Join(want[i], "\n") {
			t.Errorf("layer %d headers\n  %s\nwant\n  %s", i, strings.Join(got[i], "\n  "), strings.Join(want[i], "\n  "))
		}
	}
}

// layerHeaders copies ref out with skopeo and lists each layer's entries
// as "name mode uid:gid mtime", reading the gzip layer blobs of the layout.
func layerHeaders(t testing.TB, ref string) [][]string {
	t.Helper()
	dir, err := os.MkdirTemp(s.work, "headers-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	layout := filepath.Join(dir, "oci")
	run(t, 2*time.Minute, "skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":e2e")
	p := readLayout(t, layout, "e2e")
	var out [][]string
	for _, l := range p.manifest.Layers {
		f, err := os.Open(blobPath(layout, l.Digest))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("layer %s: %v", l.Digest, err)
		}
		var lines []string
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("layer %s: %v", l.Digest, err)
			}
			lines = append(lines, fmt.Sprintf("%s %o %d:%d %d", h.Name, h.Mode, h.Uid, h.Gid, h.ModTime.Unix()))
		}
		_ = f.Close()
		out = append(out, lines)
	}
	return out
}
