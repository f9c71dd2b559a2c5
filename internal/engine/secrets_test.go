package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/testkit"
)

// secrets are the parts of a credentialed URL that must never leave kiln.
var secrets = []string{"tenant-user", "pa55w0rd", "SECRET"}

func assertNoSecrets(t *testing.T, what string, b []byte) {
	t.Helper()
	for _, s := range secrets {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s carries %q: %s", what, s, b)
		}
	}
}

// withCredentials puts userinfo and a pre-signed query on a file server URL.
func withCredentials(u, signature string) string {
	return strings.Replace(u, "http://", "http://tenant-user:pa55w0rd@", 1) +
		"?X-Amz-Credential=AKIA&X-Amz-Signature=" + signature
}

func dockerSave(t *testing.T) []byte {
	t.Helper()
	img, err := sandbox.RandomImage(512, v1.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	var saved bytes.Buffer
	tag, _ := name.NewTag("base:1")
	if err := tarball.Write(tag, img, &saved); err != nil {
		t.Fatal(err)
	}
	return saved.Bytes()
}

// A layer and a base archive fetched from URLs with userinfo and a
// pre-signed query: nothing of either reaches the pushed config or
// manifest, the status, or the error of a failing build, and rotating the
// signature does not change the image.
func TestNoCredentialsInImageStatusOrErrors(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	layerURL := files.Put("/x.tar.gz", testkit.Gzip(t, testkit.Tar(t, testkit.File("app/run", "x"))))
	baseURL := files.Put("/base.tar", dockerSave(t))
	var digests []string
	for i, sig := range []string{"SECRET-ONE", "SECRET-TWO"} {
		ib := imageBuild("app", fmt.Sprintf("%s/team/app:%d", reg.Host, i), urlLayer("app", withCredentials(layerURL, sig)))
		ib.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: withCredentials(baseURL, sig)}}}
		res, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		img := pull(t, res.Status.Image)
		cfg, err := img.RawConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		manifest, err := img.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		ApplyResult(ib, res, time.Unix(1700000000, 0))
		status, err := json.Marshal(ib.Status)
		if err != nil {
			t.Fatal(err)
		}
		assertNoSecrets(t, "config", cfg)
		assertNoSecrets(t, "manifest", manifest)
		assertNoSecrets(t, "status", status)
		if !bytes.Contains(cfg, []byte(`"created_by":"kiln: layer app from url"`)) {
			t.Errorf("history does not name the layer and its kind: %s", cfg)
		}
		digests = append(digests, res.Status.Digest)
	}
	if digests[0] != digests[1] {
		t.Errorf("rotating the signature changed the image: %s vs %s", digests[0], digests[1])
	}

	tests := []struct {
		name   string
		layer  kilnv1.Layer
		reason failure.Reason
	}{
		{"404", urlLayer("app", withCredentials(files.URL+"/missing.tar.gz", "SECRET")), failure.SourceNotFound},
		{"digest mismatch", kilnv1.Layer{Name: "app", Source: &kilnv1.Source{URL: withCredentials(layerURL, "SECRET")},
			Digest: "sha256:" + strings.Repeat("0", 64)}, failure.DigestMismatch},
		{"refused host", urlLayer("app", "http://tenant-user:pa55w0rd@169.254.169.254/x?X-Amz-Signature=SECRET"), failure.SourceForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg.Reset()
			ib := imageBuild("app", reg.Host+"/team/app:bad", tt.layer)
			_, err := newEngine(t, "").Build(context.Background(), ib, Inputs{}, Options{})
			if failure.ReasonOf(err) != tt.reason {
				t.Fatalf("reason %s, want %s: %v", failure.ReasonOf(err), tt.reason, err)
			}
			ApplyFailure(ib, err, time.Unix(1700000000, 0))
			status, _ := json.Marshal(ib.Status)
			assertNoSecrets(t, "error", []byte(err.Error()))
			assertNoSecrets(t, "status", status)
			if w := reg.Writes(); w != 0 {
				t.Errorf("%d registry writes for a failed build", w)
			}
		})
	}
}
