package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// caseResult is every sample of one case.
type caseResult struct {
	caseDef
	Samples []sample
	Errors  []string
}

func (r *caseResult) wall() stats {
	ds := make([]time.Duration, len(r.Samples))
	for i, s := range r.Samples {
		ds[i] = s.Wall
	}
	return durationStats(ds)
}

func (r *caseResult) cpu() time.Duration {
	ds := make([]time.Duration, len(r.Samples))
	for i, s := range r.Samples {
		ds[i] = s.CPU
	}
	return durationStats(ds).Median
}

func (r *caseResult) rssKB() int64 {
	vs := make([]int64, len(r.Samples))
	for i, s := range r.Samples {
		vs[i] = s.MaxRSSKB
	}
	return medianInt(vs)
}

// upload is the median sample's upload counts (by bytes).
func (r *caseResult) upload() *uploadStats {
	var ups []uploadStats
	for _, s := range r.Samples {
		if s.Upload != nil {
			ups = append(ups, *s.Upload)
		}
	}
	if len(ups) == 0 {
		return nil
	}
	vs := make([]int64, len(ups))
	for i, u := range ups {
		vs[i] = u.Bytes
	}
	m := medianInt(vs)
	for _, u := range ups {
		if u.Bytes == m {
			return &u
		}
	}
	return &ups[0]
}

type report struct {
	cfg     config
	in      inputs
	cases   []caseDef
	results map[string]*caseResult
	sizes   map[string]int64
	extra   string // appended to results.md (profiles)
}

func newReport(cfg config, in inputs, cases []caseDef, results map[string]*caseResult) *report {
	r := &report{cfg: cfg, in: in, cases: cases, results: results, sizes: map[string]int64{}}
	for _, input := range []string{"tar", "gz", "zst", "xz", "xz1", "big"} {
		for _, f := range layersFor(input) {
			if fi, err := os.Stat(in.path(f)); err == nil {
				r.sizes[f] = fi.Size()
			}
		}
	}
	return r
}

// median wall of a case, 0 when it did not run or failed every time.
func (r *report) wallOf(name string) time.Duration {
	if res, ok := r.results[name]; ok && len(res.Samples) > 0 {
		return res.wall().Median
	}
	return 0
}

func ratio(a, b time.Duration) string {
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a.Seconds()/b.Seconds())
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# kiln bench\n\n")
	fmt.Fprintf(&b, "%s, %d CPUs, %s/%s; runs per case: %d%s; generator %s. ", time.Now().UTC().Format(time.RFC3339),
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, r.cfg.runs, map[bool]string{true: " (BENCH_SMALL: inputs 10x smaller)", false: ""}[r.cfg.small], generatorVersion)
	fmt.Fprintf(&b, "xz inputs: %s.\n\n", r.in.xzNote)
	r.writeInputs(&b)
	r.writeTable(&b)
	r.writeIndex(&b)
	r.writeSupply(&b)
	r.writeTargets(&b)
	b.WriteString(notes)
	b.WriteString(r.extra)
	return b.String()
}

func (r *report) writeInputs(b *strings.Builder) {
	b.WriteString("Inputs (rootfs + app layer): ")
	var parts []string
	for _, input := range []string{"tar", "gz", "zst", "xz", "xz1", "big"} {
		var sum int64
		for _, f := range layersFor(input) {
			sum += r.sizes[f]
		}
		parts = append(parts, fmt.Sprintf("%s %s", input, mib(sum)))
	}
	b.WriteString(strings.Join(parts, ", ") + " (big = the memory-case layer alone).\n\n")
}

func (r *report) writeTable(b *strings.Builder) {
	enc := r.wallOf("limit-gzip-encoder")
	b.WriteString("| case | what | wall median [min–max] | CPU | peak RSS | uploaded | × crane | × encoder |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.cases {
		res := r.results[c.name]
		if len(res.Samples) == 0 {
			fmt.Fprintf(b, "| %s | %s | FAILED: %s | | | | | |\n", c.name, c.desc, oneLine(res.Errors))
			continue
		}
		w := res.wall()
		up := "–"
		if u := res.upload(); u != nil {
			up = fmt.Sprintf("%s (%d blob, %d manifest PUT)", mib(u.Bytes), u.BlobPuts, u.ManifestPuts)
		}
		vsCrane, vsEnc := "–", "–"
		if c.kind == kindKiln && c.name != "kiln-rebuild" && c.input != "big" {
			vsCrane = ratio(w.Median, r.wallOf("crane-"+c.input))
		}
		if c.kind != kindLimit && c.name != "kiln-rebuild" && c.input != "big" {
			vsEnc = ratio(w.Median, enc)
		}
		failed := ""
		if len(res.Errors) > 0 {
			failed = fmt.Sprintf(" (%d runs failed)", len(res.Errors))
		}
		fmt.Fprintf(b, "| %s | %s | %s [%.2f–%.2f]%s | %s | %d MiB | %s | %s | %s |\n", c.name, c.desc,
			secs(w.Median), w.Min.Seconds(), w.Max.Seconds(), failed, secs(res.cpu()), res.rssKB()>>10, up, vsCrane, vsEnc)
	}
	b.WriteString("\n")
}

func oneLine(errs []string) string {
	if len(errs) == 0 {
		return "not run"
	}
	s := strings.ReplaceAll(errs[0], "\n", " ")
	s = strings.ReplaceAll(s, "|", "\\|")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// target is one line of the targets, evaluated on this run.
type target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      *bool  `json:"met,omitempty"` // nil: not measured
}

func check(name, goal string, value float64, ok func(float64) bool, format string, parts ...time.Duration) target {
	t := target{Name: name, Goal: goal, Measured: "not measured"}
	for _, p := range parts {
		if p == 0 {
			return t
		}
	}
	met := ok(value)
	t.Met, t.Measured = &met, fmt.Sprintf(format, value)
	return t
}

func (r *report) targets() []target {
	w := r.wallOf
	q := func(a, b string) float64 {
		if w(a) == 0 || w(b) == 0 {
			return 0
		}
		return w(a).Seconds() / w(b).Seconds()
	}
	le := func(limit float64) func(float64) bool { return func(v float64) bool { return v <= limit } }
	xzCrane := q("kiln-xz", "crane-xz")
	ts := []target{
		check("plain tar vs crane", "kiln ≤ 0.5× crane", q("kiln-tar", "crane-tar"), le(0.5), "%.2f×", w("kiln-tar"), w("crane-tar")),
		check("tar.gz vs crane", "kiln ≤ 1.0× crane", q("kiln-gz", "crane-gz"), le(1.0), "%.2f×", w("kiln-gz"), w("crane-gz")),
		check("tar.gz vs gunzip+sha256", "kiln ≤ 1.15× `gzip -dc | sha256sum`", q("kiln-gz", "limit-gunzip-sha256"), le(1.15), "%.2f×", w("kiln-gz"), w("limit-gunzip-sha256")),
		check("tar.xz (multi-block) vs xz -d + crane", "kiln ≤ 0.75× (xz -d + crane)", xzCrane, le(0.75), "%.2f×", w("kiln-xz"), w("crane-xz")),
		check("tar.xz (single block) vs xz -d + crane", "report (bounded by the decoder)", q("kiln-xz1", "crane-xz1"), func(float64) bool { return true }, "%.2f×", w("kiln-xz1"), w("crane-xz1")),
		check("tar.xz (multi-block) vs our xz decoder alone", "report", q("kiln-xz", "limit-kiln-xz"), func(float64) bool { return true }, "%.2f×", w("kiln-xz"), w("limit-kiln-xz")),
		check("tar.xz (single block) vs our xz decoder alone", "report", q("kiln-xz1", "limit-kiln-xz-1blk"), func(float64) bool { return true }, "%.2f×", w("kiln-xz1"), w("limit-kiln-xz-1blk")),
	}
	if res, ok := r.results["kiln-memory"]; ok && len(res.Samples) > 0 {
		v := float64(res.rssKB()) / 1024
		ts = append(ts, check("peak RSS, big layer", "≤ 150 MiB", v, le(150), "%.0f MiB", 1))
	}
	if res, ok := r.results["kiln-rebuild"]; ok && len(res.Samples) > 0 {
		t := target{Name: "rebuild unchanged spec", Goal: "no blob or manifest PUT, < 1 s, UpToDate"}
		var puts int64
		upToDate := true
		for _, s := range res.Samples {
			if s.Upload != nil {
				puts += s.Upload.BlobPuts + s.Upload.ManifestPuts + s.Upload.BlobUploads
			}
			upToDate = upToDate && s.KilnResult == "UpToDate"
		}
		wall := res.wall()
		met := puts == 0 && wall.Max < time.Second && upToDate
		t.Met = &met
		t.Measured = fmt.Sprintf("%d uploads/PUTs over %d runs, wall max %.2f s, all UpToDate: %v", puts, len(res.Samples), wall.Max.Seconds(), upToDate)
		ts = append(ts, t)
	}
	return ts
}

func (r *report) writeTargets(b *strings.Builder) {
	b.WriteString("## Targets (issue 7)\n\n| target | goal | measured | |\n|---|---|---|---|\n")
	for _, t := range r.targets() {
		verdict := "–"
		if t.Met != nil {
			verdict = map[bool]string{true: "met", false: "**missed**"}[*t.Met]
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", t.Name, t.Goal, t.Measured, verdict)
	}
	b.WriteString("\n")
}

const notes = `Notes:
- wall and CPU are per case run; CPU is user+sys of the measured processes and their children (wait4 rusage);
  peak RSS is the largest process's. The file server and the counting proxy run in the driver and are not counted.
- crane rows sum ` + "`crane append`" + ` per layer and ` + "`crane mutate --env`" + ` (crane v0.22.1 from go.mod); for xz inputs they
  include ` + "`xz -dc`" + ` to disk first, because crane cannot read xz (it would push the xz bytes with a wrong DiffID).
- kiln reads its layers over HTTP from the driver's file server; crane reads local files.
- uploaded = request bodies (POST/PATCH/PUT) through a counting proxy in front of the registry, the same for both tools;
  every run gets a fresh registry (CNCF distribution, bin/registry), so nothing is found already there.
- × crane = kiln wall / crane wall on the same input; × encoder = wall / limit-gzip-encoder wall.
`

type jsonReport struct {
	Generated string           `json:"generated"`
	CPUs      int              `json:"cpus"`
	Runs      int              `json:"runs"`
	Small     bool             `json:"small"`
	Generator string           `json:"generator"`
	XzInputs  string           `json:"xzInputs"`
	Sizes     map[string]int64 `json:"inputSizes"`
	Cases     []jsonCase       `json:"cases"`
	Targets   []target         `json:"targets"`
}

type jsonCase struct {
	Name     string   `json:"name"`
	Kind     caseKind `json:"kind"`
	Input    string   `json:"input"`
	Desc     string   `json:"description"`
	MedianNs int64    `json:"wallMedianNs"`
	MinNs    int64    `json:"wallMinNs"`
	MaxNs    int64    `json:"wallMaxNs"`
	Samples  []sample `json:"samples"`
	Errors   []string `json:"errors,omitempty"`
}

func (r *report) json() ([]byte, error) {
	j := jsonReport{Generated: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Runs: r.cfg.runs,
		Small: r.cfg.small, Generator: generatorVersion, XzInputs: r.in.xzNote, Sizes: r.sizes, Targets: r.targets()}
	for _, c := range r.cases {
		res := r.results[c.name]
		w := res.wall()
		j.Cases = append(j.Cases, jsonCase{Name: c.name, Kind: c.kind, Input: c.input, Desc: c.desc,
			MedianNs: int64(w.Median), MinNs: int64(w.Min), MaxNs: int64(w.Max), Samples: res.Samples, Errors: res.Errors})
	}
	return json.MarshalIndent(j, "", "  ")
}

func (r *report) write(dir string) error {
	md := r.markdown()
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	js, err := r.json()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), js, 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	return nil
}
