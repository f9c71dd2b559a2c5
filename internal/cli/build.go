package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/failure"
)

// buildFlags are shared by build and plan.
type buildFlags struct {
	files    []string
	output   string
	parallel int
	progress bool
	// sources are the --source NAME=DIR values.
	sources []string
	// engine holds --cache-dir and the limits, shared with kiln manager
	// (BindLimitFlags).
	engine engine.Config
}

func (f *buildFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&f.files, "filename", "f", nil, "file with ImageBuild (and referenced ConfigMap/Secret) documents; repeatable; - for stdin")
	cmd.Flags().StringVar(&f.engine.CacheDir, "cache-dir", defaultCacheDir(), "blob cache directory, shared by concurrent builds")
	cmd.Flags().StringVarP(&f.output, "output", "o", "yaml", "output format: yaml or json")
	cmd.Flags().IntVar(&f.parallel, "parallel", 4, "independent builds run at once")
	cmd.Flags().StringArrayVar(&f.sources, "source", nil, "NAME=DIR: a local directory standing in for the artifact of sourceRef NAME (a GitRepository checkout, say); repeatable")
	cmd.Flags().BoolVar(&f.progress, "progress", isTerminal(os.Stderr), "show per-layer progress on stderr")
	BindLimitFlags(cmd, &f.engine.Source, &f.engine.Limits, &f.engine.BuildTimeout)
	_ = cmd.MarkFlagRequired("filename")
}

func defaultCacheDir() string {
	if d := os.Getenv("KILN_CACHE_DIR"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kiln")
	}
	return filepath.Join(os.TempDir(), "kiln-cache")
}

func newBuildCmd() *cobra.Command {
	f := &buildFlags{}
	cmd := &cobra.Command{
		Use:   "build -f FILE [-f FILE ...]",
		Short: "Build and push the ImageBuilds in the given files",
		Long: `Build reads ImageBuild documents, and the ConfigMap and Secret documents they
reference, from the files; builds and pushes every ImageBuild (independent builds
in parallel) and prints them with .status filled in exactly as the controller
would. Registry credentials come from the docker config (~/.docker/config.json
or $DOCKER_CONFIG). Every ImageBuild is first validated as the API server would
validate it (the CRD's schema and rules): one invalid document stops the run with
exit status 2 before anything is fetched or pushed. A sourceRef layer (a Flux
GitRepository, OCIRepository, Bucket or ExternalArtifact) reads the directory
given with --source NAME=DIR instead of the artifact, into the same layer a
checkout of the same files gives in the cluster. Exit status 0 only when every
build is Ready.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBuild(cmd, f, false) },
	}
	f.register(cmd)
	return cmd
}

func newPlanCmd() *cobra.Command {
	f := &buildFlags{}
	cmd := &cobra.Command{
		Use:   "plan -f FILE [-f FILE ...]",
		Short: "Compute digests of the ImageBuilds in the given files without pushing",
		Long: `Plan fetches and encodes every layer (into the cache) and computes the manifest
digest and inputDigest of each ImageBuild, then asks the registry whether the
target already holds it. Nothing is written to the registry. The printed status
carries the digests; the Ready condition says whether a push would happen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBuild(cmd, f, true) },
	}
	f.register(cmd)
	return cmd
}

func runBuild(cmd *cobra.Command, f *buildFlags, dryRun bool) error {
	if f.output != "yaml" && f.output != "json" {
		return &ExitError{Code: 2, Err: fmt.Errorf("--output must be yaml or json, not %q", f.output)}
	}
	docs, err := readFiles(f.files, cmd.InOrStdin())
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	sources, err := parseSources(f.sources)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	if err := sources.check(docs.builds); err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	eng, err := engine.NewEngine(f.engine)
	if err != nil {
		return err
	}
	var prog *progressView
	if f.progress {
		prog = newProgressView(cmd.ErrOrStderr())
		defer prog.stop()
	}
	failed := buildAll(cmd.Context(), eng, docs, sources, f.parallel, dryRun, prog)
	if prog != nil {
		prog.stop()
	}
	if err := printBuilds(cmd.OutOrStdout(), docs.builds, f.output); err != nil {
		return err
	}
	if dryRun {
		for _, ib := range docs.builds {
			for _, line := range planLines(ib) {
				fprintf(cmd.ErrOrStderr(), "%s\n", line)
			}
		}
	}
	for _, line := range failed {
		fprintf(cmd.ErrOrStderr(), "%s\n", line)
	}
	if len(failed) > 0 {
		return &ExitError{Code: 1, Err: fmt.Errorf("%d of %d builds failed", len(failed), len(docs.builds))}
	}
	return nil
}

// buildAll runs the builds and fills in their status; it returns one line
// per failed build.
func buildAll(ctx context.Context, eng *engine.Engine, docs *documents, sources localSources, parallel int, dryRun bool, prog *progressView) []string {
	if parallel < 1 {
		parallel = 1
	}
	var (
		mu     sync.Mutex
		failed []string
	)
	g := &errgroup.Group{}
	g.SetLimit(parallel)
	for _, ib := range docs.builds {
		// Resolved here, not in the goroutine: inputsOf fills a shared map.
		in := docs.inputsOf(ib.Namespace)
		in.Artifacts = sources.artifacts(ib)
		g.Go(func() error {
			opts := engine.Options{DryRun: dryRun}
			if prog != nil {
				opts.Progress = prog.reporter(ib.Name)
			}
			res, err := eng.Build(ctx, ib, in, opts)
			now := time.Now()
			if err != nil {
				engine.ApplyFailure(ib, err, now)
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%s/%s: %s: %v", ib.Namespace, ib.Name, failure.ReasonOf(err), err))
				mu.Unlock()
				return nil
			}
			engine.ApplyResult(ib, res, now)
			if dryRun {
				markPlan(ib, res)
			}
			return nil
		})
	}
	_ = g.Wait()
	return failed
}

// markPlan rewrites Ready for a dry run: True only when the registry already
// holds the digest, otherwise False with reason PushRequired.
func markPlan(ib *kilnv1.ImageBuild, res *engine.Result) {
	for i := range ib.Status.Conditions {
		c := &ib.Status.Conditions[i]
		if c.Type != kilnv1.ReadyCondition {
			continue
		}
		if res.WouldPush {
			c.Status, c.Reason = "False", "PushRequired"
			c.Message = fmt.Sprintf("a build would push %s to %s", ib.Status.Digest, ib.Spec.Target.Image)
		}
	}
	ib.Status.LastBuild = nil
	ib.Status.History = nil
}

// planLines summarize a planned build for a reader: one line per platform
// of an index, then one for what the target gets (the image or the index)
// and whether a build would push it. A failed plan has no lines (its error
// is printed instead).
func planLines(ib *kilnv1.ImageBuild) []string {
	if ib.Status.Digest == "" {
		return nil
	}
	prefix := "plan " + ib.Namespace + "/" + ib.Name + ": "
	var out []string
	for _, m := range ib.Status.Manifests {
		layers := "layers"
		if len(m.Layers) == 1 {
			layers = "layer"
		}
		out = append(out, fmt.Sprintf("%s%s %s (%d added %s)", prefix, m.Platform, m.Digest, len(m.Layers), layers))
	}
	what := "image"
	if len(ib.Status.Manifests) > 0 {
		what = "index"
	}
	verdict := "up to date"
	if c := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReadyCondition); c != nil && c.Reason == "PushRequired" {
		verdict = "would push to " + ib.Spec.Target.Image
	}
	return append(out, fmt.Sprintf("%s%s %s %s", prefix, what, ib.Status.Digest, verdict))
}

// printBuilds prints one object, or a v1 List when there are several.
func printBuilds(w io.Writer, builds []*kilnv1.ImageBuild, format string) error {
	var obj any
	for _, ib := range builds {
		ib.APIVersion, ib.Kind = kilnv1.GroupVersion.String(), "ImageBuild"
	}
	if len(builds) == 1 {
		obj = builds[0]
	} else {
		obj = map[string]any{"apiVersion": "v1", "kind": "List", "items": builds}
	}
	var (
		out []byte
		err error
	)
	if format == "json" {
		out, err = json.MarshalIndent(obj, "", "  ")
		out = append(out, '\n')
	} else {
		out, err = yaml.Marshal(obj)
	}
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	_, err = w.Write(out)
	return err
}
