package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// indexSpec is a two-platform build whose one layer (the tar.gz rootfs)
// is shared by both platforms.
const indexSpec = `apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata:
  name: bench-index
  namespace: default
spec:
  platforms:
  - platform: linux/amd64
  - platform: linux/arm64
  layers:
  - name: rootfs
    source:
      url: %s
  config:
    env:
    - name: A
      value: b
  target:
    image: %s
`

// indexCase measures a two-platform index with one shared layer: the
// layer must be encoded once (both images list the same blob, uploaded
// once), so its wall time is to be read against the single-platform
// build of the same layer (kiln-index1) in the same run.
func indexCase(platforms int) func(context.Context, *bench, *registry, int) (sample, error) {
	return func(ctx context.Context, b *bench, _ *registry, run int) (sample, error) {
		dir, err := os.MkdirTemp(b.work, "index-")
		if err != nil {
			return sample{}, err
		}
		defer os.RemoveAll(dir)
		target := fmt.Sprintf("%s/bench/kiln-index%d:%d", b.proxy.addr, platforms, run)
		spec := fmt.Sprintf(indexSpec, b.files.url(rootfsTar+".gz"), target)
		if platforms == 1 {
			// The same layer as a single image: the baseline.
			spec = fmt.Sprintf(specTemplate, fmt.Sprintf("  - name: rootfs\n    source:\n      url: %s\n", b.files.url(rootfsTar+".gz")), "", target)
		}
		path := filepath.Join(dir, "spec.yaml")
		if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
			return sample{}, err
		}
		s, out, err := runProc(ctx, nil, b.cfg.kiln, "build", "-f", path, "--cache-dir", filepath.Join(dir, "cache"), "-o", "json", "--progress=false")
		if err != nil {
			return s, err
		}
		if platforms > 1 {
			return s, checkSharedLayer(out, platforms)
		}
		return s, nil
	}
}

// checkSharedLayer fails the sample unless every image of the index lists
// the same rootfs blob.
func checkSharedLayer(out []byte, platforms int) error {
	var st struct {
		Status struct {
			Manifests []struct {
				Platform string `json:"platform"`
				Layers   []struct {
					Digest string `json:"digest"`
				} `json:"layers"`
			} `json:"manifests"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("reading kiln output: %w", err)
	}
	ms := st.Status.Manifests
	if len(ms) != platforms {
		return fmt.Errorf("index has %d images, want %d", len(ms), platforms)
	}
	for _, m := range ms {
		if len(m.Layers) != 1 || m.Layers[0].Digest != ms[0].Layers[0].Digest {
			return fmt.Errorf("%s: layers %+v, want the one shared blob %+v", m.Platform, m.Layers, ms[0].Layers)
		}
	}
	return nil
}

// writeIndex compares the two-platform index with the single image of the
// same layer: with the layer encoded once, the index costs one more config
// and two more manifests, not a second encode.
func (r *report) writeIndex(b *strings.Builder) {
	one, two := r.wallOf("kiln-index1"), r.wallOf("kiln-index2")
	if one == 0 || two == 0 {
		return
	}
	fmt.Fprintf(b, "Two-platform index sharing the %s tar.gz rootfs: %s vs %s for the single image (%s)",
		mib(r.sizes[rootfsTar+".gz"]), secs(two), secs(one), ratio(two, one))
	if u1, u2 := r.results["kiln-index1"].upload(), r.results["kiln-index2"].upload(); u1 != nil && u2 != nil {
		fmt.Fprintf(b, "; uploaded %s vs %s", mib(u2.Bytes), mib(u1.Bytes))
	}
	b.WriteString(": the shared layer is encoded and uploaded once.\n\n")
}
