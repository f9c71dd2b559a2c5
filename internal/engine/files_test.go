package engine

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

func str(s string) *string { return &s }
func i64(v int64) *int64   { return &v }

// tarEntries lists a tar as "name mode uid:gid mtime body" lines.
func tarEntries(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for _, e := range testkit.ReadTar(t, bytes.NewReader(b)) {
		h := e.Header
		out = append(out, fmt.Sprintf("%s %o %d:%d %d %q", h.Name, h.Mode, h.Uid, h.Gid, h.ModTime.Unix(), e.Body))
	}
	return out
}

var filesInputs = Inputs{
	ConfigMaps: map[string]map[string][]byte{
		"site": {"index.html": []byte("<h1>hi</h1>"), "logo.png": {0x89, 'P', 'N', 'G'}},
		"conf": {"log.yaml": []byte("level: info")},
	},
	Secrets: map[string]map[string][]byte{"tls": {"key.pem": []byte("SECRET-KEY")}},
}

// A files layer and a configMapDir layer go into the registry and read
// back with the entries, modes, owners and mtimes they declare; the status
// shows no sha256 of bytes holding a Secret; the same spec builds the same
// digest in another cache dir.
func TestFilesAndConfigMapDirLayers(t *testing.T) {
	reg := testkit.NewRegistry(t)
	ib := imageBuild("web", reg.Host+"/team/web:1",
		kilnv1.Layer{Name: "config", UID: i64(1000), Source: &kilnv1.Source{Files: []kilnv1.FileEntry{
			{Path: "/etc/app/app.yaml", Content: str("port: 8080\n")},
			{Path: "/etc/app/tls/key.pem", SecretKeyRef: &kilnv1.KeySelector{Name: "tls", Key: "key.pem"}, Mode: "0600", UID: i64(0)},
			{Path: "/etc/app/log.yaml", ConfigMapKeyRef: &kilnv1.KeySelector{Name: "conf", Key: "log.yaml"}},
		}}},
		kilnv1.Layer{Name: "site", DirMode: "0750", FileMode: "0640",
			Source: &kilnv1.Source{ConfigMapDir: &kilnv1.DirSource{Name: "site", TargetDir: "/srv/www"}}},
	)
	when := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	ib.Spec.Created = &v1.Time{Time: when}
	res, err := newEngine(t, "").Build(context.Background(), ib, filesInputs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := pull(t, res.Status.Image)
	ts := when.Unix()
	want := [][]string{{
		fmt.Sprintf("etc/ 755 1000:0 %d \"\"", ts),
		fmt.Sprintf("etc/app/ 755 1000:0 %d \"\"", ts),
		fmt.Sprintf("etc/app/app.yaml 644 1000:0 %d \"port: 8080\\n\"", ts),
		fmt.Sprintf("etc/app/log.yaml 644 1000:0 %d \"level: info\"", ts),
		fmt.Sprintf("etc/app/tls/ 755 1000:0 %d \"\"", ts),
		fmt.Sprintf("etc/app/tls/key.pem 600 0:0 %d \"SECRET-KEY\"", ts),
	}, {
		fmt.Sprintf("srv/ 750 0:0 %d \"\"", ts),
		fmt.Sprintf("srv/www/ 750 0:0 %d \"\"", ts),
		fmt.Sprintf("srv/www/index.html 640 0:0 %d \"<h1>hi</h1>\"", ts),
		fmt.Sprintf("srv/www/logo.png 640 0:0 %d \"\\x89PNG\"", ts),
	}}
	for i := range want {
		if got := tarEntries(t, layerTar(t, img, i)); strings.Join(got, "\n") != strings.Join(want[i], "\n") {
			t.Errorf("layer %d:\n got %s\nwant %s", i, strings.Join(got, "\n"), strings.Join(want[i], "\n"))
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.History) != 2 || !strings.Contains(cf.History[0].CreatedBy, "files") || !strings.Contains(cf.History[1].CreatedBy, "configMapDir") {
		t.Errorf("history %+v, want the files and configMapDir kinds", cf.History)
	}
	if got := res.Status.Layers[0].SourceDigest; got != "secret:files" {
		t.Errorf("files layer with a Secret shows sourceDigest %q, want secret:files", got)
	}
	if got := res.Status.Layers[1].SourceDigest; !strings.HasPrefix(got, "sha256:") {
		t.Errorf("configMapDir layer shows sourceDigest %q, want the sha256 of the generated tar", got)
	}
	again, err := newEngine(t, "").Build(context.Background(), ib.DeepCopy(), filesInputs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Status.Digest != res.Status.Digest || !again.UpToDate {
		t.Errorf("second build: digest %s (first %s), upToDate %t", again.Status.Digest, res.Status.Digest, again.UpToDate)
	}
	// A changed ConfigMap value is a different layer.
	changed := Inputs{ConfigMaps: map[string]map[string][]byte{"site": {"index.html": []byte("<h1>ho</h1>"), "logo.png": {1}}, "conf": filesInputs.ConfigMaps["conf"]}, Secrets: filesInputs.Secrets}
	third, err := newEngine(t, "").Build(context.Background(), ib.DeepCopy(), changed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if third.Status.Layers[1].Digest == res.Status.Layers[1].Digest || third.Status.Layers[0].Digest != res.Status.Layers[0].Digest {
		t.Errorf("a changed ConfigMap must change the site layer only")
	}
}

// secretDir layers neither show nor fingerprint the sha256 of secret bytes.
func TestSecretDirHidesItsDigest(t *testing.T) {
	reg := testkit.NewRegistry(t)
	ib := imageBuild("s", reg.Host+"/team/s:1", kilnv1.Layer{Name: "tls",
		Source: &kilnv1.Source{SecretDir: &kilnv1.DirSource{Name: "tls", TargetDir: "/run/secrets"}}})
	res, err := newEngine(t, "").Build(context.Background(), ib, filesInputs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := res.Status.Layers[0]
	if l.SourceDigest != "secret:tls/*" {
		t.Errorf("sourceDigest %q, want secret:tls/*", l.SourceDigest)
	}
	// The DiffID is in the image anyway; the sha256 of the fetched bytes
	// (the generated tar) must not enter the inputDigest for it.
	c := cachedLayer{SourceDigest: "sha256:generated", Digest: l.Digest, DiffID: l.DiffID}
	if got := inputOf(ib.Spec.Layers[0].Source, c); strings.Contains(got, "generated") {
		t.Errorf("inputOf = %q, want the blob digest and diffID", got)
	}
}

func TestGeneratedLayerErrors(t *testing.T) {
	tests := []struct {
		name   string
		src    kilnv1.Source
		reason failure.Reason
		want   string
	}{
		{"missing ConfigMap", kilnv1.Source{ConfigMapDir: &kilnv1.DirSource{Name: "nope", TargetDir: "/x"}},
			failure.SourceNotFound, `layer "l": ConfigMap "nope" not found in the ImageBuild's namespace`},
		{"missing key", kilnv1.Source{Files: []kilnv1.FileEntry{{Path: "/a", Content: str("")}, {Path: "/b", SecretKeyRef: &kilnv1.KeySelector{Name: "tls", Key: "nope"}}}},
			failure.SourceNotFound, `layer "l": files[1]: Secret "tls" has no key "nope"`},
		{"duplicate path", kilnv1.Source{Files: []kilnv1.FileEntry{{Path: "/a", Content: str("SECRET-1")}, {Path: "/a", Content: str("SECRET-2")}}},
			failure.InvalidSpec, `layer "l": files[0] and files[1] both write "/a"`},
		{"unclean targetDir", kilnv1.Source{ConfigMapDir: &kilnv1.DirSource{Name: "site", TargetDir: "/srv/../x"}},
			failure.InvalidSpec, `layer "l": targetDir "/srv/../x" must be absolute and clean (want "/x")`},
		{"bad mode", kilnv1.Source{Files: []kilnv1.FileEntry{{Path: "/a", Content: str(""), Mode: "0999"}}},
			failure.InvalidSpec, `layer "l": files[0]: mode "0999": want octal digits`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := testkit.NewRegistry(t)
			src := tt.src
			ib := imageBuild("e", reg.Host+"/team/e:1", kilnv1.Layer{Name: "l", Source: &src})
			_, err := newEngine(t, "").Build(context.Background(), ib, filesInputs, Options{})
			if err == nil || err.Error() != tt.want || failure.ReasonOf(err) != tt.reason {
				t.Fatalf("error %v (%s), want %s (%s)", err, failure.ReasonOf(err), tt.want, tt.reason)
			}
			if strings.Contains(err.Error(), "SECRET") || reg.Writes() != 0 {
				t.Errorf("error shows content or something was pushed (%d writes)", reg.Writes())
			}
		})
	}
}

// Layer overrides reach URL tarballs through the normalizer.
func TestOverridesOnURLLayer(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	rootfs := testkit.Tar(t, testkit.Dir("bin/"), testkit.File("bin/run", "x").WithMode(0o700), testkit.File("etc", "y").WithMode(0o600))
	l := urlLayer("app", files.Put("/app.tar.gz", testkit.Gzip(t, rootfs)))
	l.FileMode, l.DirMode, l.UID, l.GID = "0644", "0711", i64(65532), i64(65532)
	ib := imageBuild("o", reg.Host+"/team/o:1", l)
	res, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := tarEntries(t, layerTar(t, pull(t, res.Status.Image), 0))
	ts := testkit.Time.Unix()
	want := []string{
		fmt.Sprintf("bin/ 711 65532:65532 %d \"\"", ts),
		fmt.Sprintf("bin/run 755 65532:65532 %d \"x\"", ts),
		fmt.Sprintf("etc 644 65532:65532 %d \"y\"", ts),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer:\n got %s\nwant %s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if c := res.Status.Layers[0].Changes; c["overriddenModes"] != 3 || c["overriddenOwners"] != 3 {
		t.Errorf("changes %v, want 3 overridden modes and owners", c)
	}
	// Without the overrides the same URL is another layer (the cache key
	// holds them).
	plain := imageBuild("o", reg.Host+"/team/o:2", urlLayer("app", l.Source.URL))
	res2, err := newEngine(t, "").Build(context.Background(), plain, Inputs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Status.Layers[0].DiffID != testkit.Digest(rootfs) {
		t.Error("a layer without overrides is not the input tar")
	}
}
