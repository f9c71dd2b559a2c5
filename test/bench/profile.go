package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"

	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/blobstore"
	"github.com/kiln-build/kiln/internal/engine"
)

// kiln has no profiling flag, so `bench profile SPEC CACHE OUT` runs the
// same engine `kiln build` runs (internal/engine, empty Inputs, default
// options) under a CPU profile.
func runProfile(ctx context.Context, specPath, cacheDir, out string) error {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	var ib kilnv1.ImageBuild
	if err := yaml.Unmarshal(raw, &ib); err != nil {
		return fmt.Errorf("reading %s: %w", specPath, err)
	}
	store, err := blobstore.Open(cacheDir, blobstore.Options{})
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	e := &engine.Engine{Store: store}
	_, err = e.Build(ctx, &ib, engine.Inputs{}, engine.Options{})
	pprof.StopCPUProfile()
	if err != nil {
		return fmt.Errorf("building: %w", err)
	}
	return nil
}

// profiledCases are profiled once after the measured runs (BENCH_PROFILE=0
// skips it): the plain-tar and xz paths, where the targets are tight.
var profiledCases = []string{"tar", "gz", "xz"}

// profiles runs each profiled input once under the profiler and returns the
// `go tool pprof -top` output of each, for results.md.
func (b *bench) profiles(ctx context.Context) string {
	self, err := os.Executable()
	if err != nil {
		return err.Error()
	}
	var sb strings.Builder
	sb.WriteString("\n## CPU profiles of the kiln engine (one build each, internal/engine in-process)\n")
	for _, input := range profiledCases {
		top, err := b.profileOne(ctx, self, input)
		if err != nil {
			top = "profiling failed: " + err.Error()
		}
		fmt.Fprintf(&sb, "\n### %s input\n\n```\n%s```\n", input, top)
	}
	return sb.String()
}

func (b *bench) profileOne(ctx context.Context, self, input string) (string, error) {
	reg, err := startRegistry(ctx, b.cfg.registry, b.work)
	if err != nil {
		return "", err
	}
	defer reg.stop()
	b.proxy.setBackend(reg.addr)
	dir, err := os.MkdirTemp(b.work, "profile-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	spec, err := b.writeSpec(dir, input, "", fmt.Sprintf("%s/bench/profile-%s:1", b.proxy.addr, input))
	if err != nil {
		return "", err
	}
	prof := filepath.Join(b.cfg.outDir, "cpu-"+input+".pprof")
	if _, _, err := runProc(ctx, nil, self, "profile", spec, filepath.Join(dir, "cache"), prof); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", self, prof).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	return string(out), nil
}
