package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// bench holds what every case needs.
type bench struct {
	cfg   config
	in    inputs
	work  string
	files *fileServer
	proxy *countingProxy
}

type caseKind string

const (
	kindKiln  caseKind = "kiln"
	kindCrane caseKind = "crane"
	kindLimit caseKind = "limit"
)

// caseDef is one row of the table.
type caseDef struct {
	name string
	kind caseKind
	desc string
	// input names the input format; kiln and crane rows with the same input
	// are compared ("× crane").
	input string
	run   func(ctx context.Context, b *bench, r *registry, run int) (sample, error)
	// registry: the case pushes, so it gets a fresh registry behind the proxy.
	registry bool
}

// layersFor maps an input format to the two layer files (rootfs, app).
func layersFor(input string) []string {
	switch input {
	case "tar":
		return []string{rootfsTar, appTar}
	case "xz1":
		return []string{"rootfs.1blk.tar.xz", "app.1blk.tar.xz"}
	case "big":
		return []string{bigTar}
	default:
		return []string{rootfsTar + "." + input, appTar + "." + input}
	}
}

func allCases() []caseDef {
	var cs []caseDef
	for _, f := range []struct{ input, desc string }{
		{"tar", "plain tar"},
		{"gz", "tar.gz (gzip -6)"},
		{"zst", "tar.zst (zstd -3)"},
		{"xz", "tar.xz (multi-block)"},
		{"xz1", "tar.xz (single block)"},
	} {
		cs = append(cs,
			caseDef{name: "kiln-" + f.input, kind: kindKiln, input: f.input, registry: true,
				desc: "kiln build, " + f.desc + ", empty cache", run: kilnCase(f.input, "")},
			caseDef{name: "crane-" + f.input, kind: kindCrane, input: f.input, registry: true,
				desc: craneDesc(f.input, f.desc), run: craneCase(f.input)})
	}
	cs = append(cs,
		caseDef{name: "kiln-zst-out-zstd", kind: kindKiln, input: "zst", registry: true,
			desc: "kiln build, tar.zst with `output: {compression: zstd}` (zstd fast path, like crane's pass-through)", run: kilnCase("zst", "zstd")},
		caseDef{name: "kiln-rebuild", kind: kindKiln, input: "gz", registry: true,
			desc: "second kiln build of the tar.gz spec, same registry and cache", run: rebuildCase},
		caseDef{name: "kiln-memory", kind: kindKiln, input: "big", registry: true,
			desc: "kiln build of the big plain-tar layer (peak RSS)", run: kilnCase("big", "")},
		caseDef{name: "kiln-index1", kind: kindKiln, input: "gz1", registry: true,
			desc: "kiln build, the tar.gz rootfs alone as a single image (baseline of kiln-index2)", run: indexCase(1)},
		caseDef{name: "kiln-index2", kind: kindKiln, input: "gz1", registry: true,
			desc: "kiln build, two-platform index (linux/amd64 + linux/arm64) sharing the tar.gz rootfs: encoded and uploaded once", run: indexCase(2)},
		caseDef{name: "kiln-unsigned", kind: kindKiln, input: "tar1", registry: true,
			desc: "kiln build, the plain-tar rootfs alone as a single image (baseline of kiln-signed)", run: supplyCase(false)},
		caseDef{name: "kiln-signed", kind: kindKiln, input: "tar1", registry: true,
			desc: "kiln build, the same with a cosign signature, an SPDX SBOM listing every file's sha256 and SLSA provenance", run: supplyCase(true)},
	)
	tars := []string{rootfsTar, appTar}
	cs = append(cs,
		limitCase("limit-gzip-encoder", "tar", "kiln's gzip encoder alone (internal/compression, parallel) over the tar bytes", "gzip-encoder", tars),
		limitCase("limit-kp-gzip1", "tar", "klauspost gzip -1 single-threaded over the tar bytes (reference)", "klauspost-gzip1", tars),
		limitCase("limit-sha256", "tar", "sha256 alone over the tar bytes", "sha256", tars),
		shellCase("limit-gunzip-sha256", "gz", "`gzip -dc | sha256sum` (fast-path limit)", "gzip -dc %s | sha256sum", layersFor("gz")),
		limitCase("limit-go-gunzip", "gz", "our gzip reader + sha256 over the tar.gz (Go)", "go-gunzip-sha256", layersFor("gz")),
		shellCase("limit-xz-dc", "xz", "`xz -dc -T1` (liblzma, 1 thread) on the multi-block xz", "xz -dc -T1 %s > /dev/null", layersFor("xz")),
		shellCase("limit-xz-dc-T2", "xz", "`xz -dc -T2` (liblzma, 2 threads) on the multi-block xz", "xz -dc -T2 %s > /dev/null", layersFor("xz")),
		limitCase("limit-kiln-xz", "xz", "our xz decoder alone on the multi-block xz", "kiln-xz-decoder", layersFor("xz")),
		shellCase("limit-xz-dc-1blk", "xz1", "`xz -dc` on the single-block xz", "xz -dc %s > /dev/null", layersFor("xz1")),
		limitCase("limit-kiln-xz-1blk", "xz1", "our xz decoder alone on the single-block xz", "kiln-xz-decoder", layersFor("xz1")),
	)
	return cs
}

func craneDesc(input, desc string) string {
	switch input {
	case "xz", "xz1":
		return "`xz -dc` to disk (crane cannot read xz) + crane append ×2 + mutate, " + desc
	default:
		return "crane append ×2 + crane mutate, " + desc
	}
}

// measure runs one case once, with a fresh registry when it pushes.
func (b *bench) measure(ctx context.Context, c caseDef, run int) (sample, error) {
	var reg *registry
	if c.registry {
		var err error
		reg, err = startRegistry(ctx, b.cfg.registry, b.work)
		if err != nil {
			return sample{}, err
		}
		defer reg.stop()
		b.proxy.setBackend(reg.addr)
		b.proxy.reset()
	}
	s, err := c.run(ctx, b, reg, run)
	if c.registry {
		st := b.proxy.reset()
		if s.Upload == nil {
			s.Upload = &st
		}
	}
	return s, err
}

// ---- kiln ----

const specTemplate = `apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata:
  name: bench
  namespace: default
spec:
  base:
    image: scratch
  layers:
%s%s  config:
    env:
    - name: A
      value: b
  target:
    image: %s
`

func (b *bench) writeSpec(dir, input, output, target string) (string, error) {
	var layers strings.Builder
	for i, f := range layersFor(input) {
		name := []string{"rootfs", "app"}[i]
		if input == "big" {
			name = "big"
		}
		fmt.Fprintf(&layers, "  - name: %s\n    source:\n      url: %s\n", name, b.files.url(f))
	}
	path := filepath.Join(dir, "spec.yaml")
	out := ""
	if output != "" {
		out = "  output:\n    compression: " + output + "\n"
	}
	return path, os.WriteFile(path, fmt.Appendf(nil, specTemplate, layers.String(), out, target), 0o644)
}

// kilnStatus is the part of the printed ImageBuild the bench reads.
type kilnStatus struct {
	Status struct {
		Digest    string `json:"digest"`
		LastBuild struct {
			Result   string `json:"result"`
			BytesOut int64  `json:"bytesOut"`
		} `json:"lastBuild"`
	} `json:"status"`
}

func (b *bench) kilnBuild(ctx context.Context, spec, cache string) (sample, kilnStatus, error) {
	var st kilnStatus
	s, out, err := runProc(ctx, nil, b.cfg.kiln, "build", "-f", spec, "--cache-dir", cache, "-o", "json", "--progress=false")
	if err != nil {
		return s, st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return s, st, fmt.Errorf("reading kiln output: %w", err)
	}
	s.KilnBytesOut, s.KilnResult = st.Status.LastBuild.BytesOut, st.Status.LastBuild.Result
	return s, st, nil
}

func kilnCase(input, output string) func(context.Context, *bench, *registry, int) (sample, error) {
	return func(ctx context.Context, b *bench, _ *registry, run int) (sample, error) {
		dir, err := os.MkdirTemp(b.work, "kiln-")
		if err != nil {
			return sample{}, err
		}
		defer os.RemoveAll(dir)
		spec, err := b.writeSpec(dir, input, output, fmt.Sprintf("%s/bench/kiln-%s:%d", b.proxy.addr, input, run))
		if err != nil {
			return sample{}, err
		}
		s, _, err := b.kilnBuild(ctx, spec, filepath.Join(dir, "cache"))
		return s, err
	}
}

// rebuildCase builds the tar.gz spec once (not measured), then measures a
// second build with the same registry and cache: it must be UpToDate.
func rebuildCase(ctx context.Context, b *bench, _ *registry, run int) (sample, error) {
	dir, err := os.MkdirTemp(b.work, "rebuild-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(dir)
	spec, err := b.writeSpec(dir, "gz", "", fmt.Sprintf("%s/bench/kiln-rebuild:%d", b.proxy.addr, run))
	if err != nil {
		return sample{}, err
	}
	cache := filepath.Join(dir, "cache")
	if _, _, err := b.kilnBuild(ctx, spec, cache); err != nil {
		return sample{}, fmt.Errorf("first build: %w", err)
	}
	b.proxy.reset()
	s, _, err := b.kilnBuild(ctx, spec, cache)
	return s, err
}

// ---- crane ----

func craneCase(input string) func(context.Context, *bench, *registry, int) (sample, error) {
	return func(ctx context.Context, b *bench, _ *registry, run int) (sample, error) {
		dir, err := os.MkdirTemp(b.work, "crane-")
		if err != nil {
			return sample{}, err
		}
		defer os.RemoveAll(dir)
		var total sample
		layers := make([]string, 0, 2)
		for _, f := range layersFor(input) {
			layers = append(layers, b.in.path(f))
		}
		if input == "xz" || input == "xz1" {
			// crane cannot read xz (it would push the xz bytes with a wrong
			// DiffID): decompress by hand first, as users must.
			for i, f := range layers {
				out := filepath.Join(dir, fmt.Sprintf("layer%d.tar", i))
				s, _, err := runProc(ctx, nil, "bash", "-c", fmt.Sprintf("xz -dc %q > %q", f, out))
				if err != nil {
					return total, err
				}
				total.add(s)
				layers[i] = out
			}
		}
		ref := fmt.Sprintf("%s/bench/crane-%s:%d", b.proxy.addr, input, run)
		steps := [][]string{{b.cfg.crane, "append", "--insecure", "--oci-empty-base", "-f", layers[0], "-t", ref}}
		for _, l := range layers[1:] {
			steps = append(steps, []string{b.cfg.crane, "append", "--insecure", "-b", ref, "-f", l, "-t", ref})
		}
		// os/arch on the result so it matches kiln's (crane's empty base has os "").
		steps = append(steps, []string{b.cfg.crane, "mutate", "--insecure", "--set-platform", "linux/amd64", "--env", "A=b", "-t", ref, ref})
		for _, argv := range steps {
			s, _, err := runProc(ctx, nil, argv...)
			total.add(s)
			if err != nil {
				return total, err
			}
		}
		return total, nil
	}
}

// ---- limits ----

func limitCase(name, input, desc, limit string, files []string) caseDef {
	return caseDef{name: name, kind: kindLimit, input: input, desc: desc,
		run: func(ctx context.Context, b *bench, _ *registry, _ int) (sample, error) {
			self, err := os.Executable()
			if err != nil {
				return sample{}, err
			}
			argv := []string{self, "limit", limit}
			for _, f := range files {
				argv = append(argv, b.in.path(f))
			}
			s, _, err := runProc(ctx, nil, argv...)
			return s, err
		}}
}

func shellCase(name, input, desc, script string, files []string) caseDef {
	return caseDef{name: name, kind: kindLimit, input: input, desc: desc,
		run: func(ctx context.Context, b *bench, _ *registry, _ int) (sample, error) {
			quoted := make([]string, len(files))
			for i, f := range files {
				quoted[i] = fmt.Sprintf("%q", b.in.path(f))
			}
			s, _, err := runProc(ctx, nil, "bash", "-o", "pipefail", "-c", fmt.Sprintf(script, strings.Join(quoted, " ")))
			return s, err
		}}
}
