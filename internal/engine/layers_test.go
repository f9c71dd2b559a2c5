package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

// Lower packages name the layer themselves (failure.LayerError); the engine
// names only the errors that do not, so every message names it once.
func TestLayerErrorsNameTheLayerOnce(t *testing.T) {
	files := testkit.NewFileServer(t)
	missing := files.URL + "/missing.tar"
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name   string
		layer  kilnv1.Layer
		cancel bool
		want   string // the whole message, or its start
		whole  bool
	}{
		{"named by the engine's own inputs", kilnv1.Layer{Name: "l", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "cm", Key: "k"}}},
			false, `layer "l": ConfigMap "cm" not found in the ImageBuild's namespace`, true},
		{"named by the source package", urlLayer("l", missing),
			false, `layer "l": GET ` + missing + `: 404 Not Found: 404 page not found`, true},
		{"named by the layer package", urlLayer("l", files.Put("/bad.tar", []byte("<html>"))),
			false, `layer "l": not a tar archive`, false},
		// The source finds the mismatch at the end of the stream, under
		// the normalizer's read: still one name, and no "reading the tar
		// stream" in front of a message that says it all.
		{"named by the source under the layer package", func() kilnv1.Layer {
			l := urlLayer("l", files.Put("/pinned.tar", testkit.Tar(t, testkit.File("a", "x"))))
			l.Digest = "sha256:" + strings.Repeat("0", 64)
			return l
		}(), false, `layer "l": fetched bytes have digest sha256:`, false},
		// The blob store's wait for the layer's fetch knows no layer: the
		// engine names it.
		{"named by the engine", urlLayer("l", missing), true, `layer "l": context canceled`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.cancel {
				ctx = cancelled
			}
			_, err := newEngine(t, "").Build(ctx, imageBuild("app", testkit.NewRegistry(t).Host+"/team/app:1", tt.layer), Inputs{}, Options{})
			if err == nil {
				t.Fatal("build succeeded")
			}
			msg := err.Error()
			if tt.whole && msg != tt.want || !strings.HasPrefix(msg, tt.want) || strings.Count(msg, `layer "l"`) != 1 {
				t.Errorf("error %q, want the layer named once in %q", msg, tt.want)
			}
			var le *failure.LayerError
			if !errors.As(err, &le) || le.Layer != "l" {
				t.Errorf("error %q carries no LayerError of layer l", msg)
			}
		})
	}
}
