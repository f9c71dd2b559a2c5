// Command bench is the driver behind `make bench` (hack/bench.sh): it
// generates deterministic inputs, serves them over HTTP, runs a real
// registry behind a byte-counting proxy, and measures `kiln build` against
// the crane pipeline users run today and against the codecs' own limits,
// all in one run on the same machine. Results go to results.md and
// results.json in the output directory.
//
// Environment: BENCH_RUNS (default 5), BENCH_SMALL=1 (inputs 10x smaller),
// BENCH_CASES (comma-separated case names or group prefixes, default all).
//
// `bench limit NAME FILE...` is the child side of the in-process limits;
// `bench gen` only generates the inputs; `bench profile SPEC CACHE OUT` runs
// the kiln engine in-process under a CPU profile.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

type config struct {
	root     string // repository root
	outDir   string // bin/bench
	kiln     string
	crane    string
	registry string
	runs     int
	small    bool
	only     []string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "limit" {
		if len(os.Args) < 4 {
			log.Fatal("usage: bench limit NAME FILE...")
		}
		if err := runLimit(os.Args[2], os.Args[3:]); err != nil {
			log.Fatalf("limit %s: %v", os.Args[2], err)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "profile" {
		if len(os.Args) != 5 {
			log.Fatal("usage: bench profile SPEC CACHE-DIR OUT.pprof")
		}
		if err := runProfile(context.Background(), os.Args[2], os.Args[3], os.Args[4]); err != nil {
			log.Fatalf("profile: %v", err)
		}
		return
	}
	gen := len(os.Args) > 1 && os.Args[1] == "gen"
	if gen {
		os.Args = append(os.Args[:1], os.Args[2:]...)
	}
	cfg, err := parseConfig()
	if err != nil {
		log.Fatal(err)
	}
	if gen {
		if _, err := ensureInputs(filepath.Join(cfg.outDir, "inputs"), cfg.small, logf); err != nil {
			log.Fatalf("bench gen: %v", err)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

func parseConfig() (config, error) {
	var c config
	flag.StringVar(&c.root, "root", ".", "repository root")
	flag.StringVar(&c.outDir, "out", "bin/bench", "output directory (inputs cache, results)")
	flag.Parse()
	root, err := filepath.Abs(c.root)
	if err != nil {
		return c, err
	}
	c.root = root
	if !filepath.IsAbs(c.outDir) {
		c.outDir = filepath.Join(root, c.outDir)
	}
	c.kiln = filepath.Join(root, "bin", "kiln")
	c.crane = filepath.Join(root, "bin", "crane")
	c.registry = filepath.Join(root, "bin", "registry")
	for _, bin := range []string{c.kiln, c.crane, c.registry} {
		if _, err := os.Stat(bin); err != nil {
			return c, fmt.Errorf("%s missing (hack/bench.sh builds it): %w", bin, err)
		}
	}
	c.runs = 5
	if v := os.Getenv("BENCH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return c, fmt.Errorf("BENCH_RUNS=%q: want a positive integer", v)
		}
		c.runs = n
	}
	c.small = os.Getenv("BENCH_SMALL") == "1"
	if v := os.Getenv("BENCH_CASES"); v != "" {
		c.only = strings.Split(v, ",")
	}
	return c, nil
}

func logf(format string, args ...any) { log.Printf(format, args...) }

func run(ctx context.Context, cfg config) error {
	// Generate in a child process: the driver's own peak RSS would otherwise
	// be charged to every process it starts (see runProc).
	self, err := os.Executable()
	if err != nil {
		return err
	}
	gen := exec.CommandContext(ctx, self, "gen", "-root", cfg.root, "-out", cfg.outDir)
	gen.Stdout, gen.Stderr = os.Stdout, os.Stderr
	if err := gen.Run(); err != nil {
		return fmt.Errorf("generating inputs: %w", err)
	}
	in, err := ensureInputs(filepath.Join(cfg.outDir, "inputs"), cfg.small, logf)
	if err != nil {
		return err
	}
	work := filepath.Join(cfg.outDir, "work")
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(work)

	fs, err := startFileServer(in.dir)
	if err != nil {
		return err
	}
	defer fs.close()
	proxy, err := startProxy()
	if err != nil {
		return err
	}
	defer proxy.close()

	b := &bench{cfg: cfg, in: in, work: work, files: fs, proxy: proxy}
	cases := selectCases(allCases(), cfg.only)
	results := make(map[string]*caseResult, len(cases))
	for _, c := range cases {
		results[c.name] = &caseResult{caseDef: c}
	}
	// Runs are interleaved (run 1 of every case, then run 2 ...) so a noisy
	// minute on the shared machine spreads over all cases instead of one.
	for i := range cfg.runs {
		for _, c := range cases {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := b.measure(ctx, c, i)
			r := results[c.name]
			if err != nil {
				logf("run %d/%d %-16s FAILED: %v", i+1, cfg.runs, c.name, err)
				r.Errors = append(r.Errors, err.Error())
				continue
			}
			logf("run %d/%d %-16s wall %6.2fs cpu %6.2fs rss %5d MiB up %s", i+1, cfg.runs, c.name,
				s.Wall.Seconds(), s.CPU.Seconds(), s.MaxRSSKB>>10, fmtUpload(s.Upload))
			r.Samples = append(r.Samples, s)
		}
	}
	rep := newReport(cfg, in, cases, results)
	if os.Getenv("BENCH_PROFILE") != "0" && len(cases) > 0 {
		logf("profiling the engine on %v inputs", profiledCases)
		rep.extra = b.profiles(ctx)
	}
	return rep.write(cfg.outDir)
}

func fmtUpload(u *uploadStats) string {
	if u == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB (%d blob PUT, %d manifest PUT)", float64(u.Bytes)/(1<<20), u.BlobPuts, u.ManifestPuts)
}

func selectCases(all []caseDef, only []string) []caseDef {
	if len(only) == 0 {
		return all
	}
	var out []caseDef
	for _, c := range all {
		for _, o := range only {
			if c.name == o || strings.HasPrefix(c.name, o) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}
