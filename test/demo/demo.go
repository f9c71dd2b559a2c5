package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/cli"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/units"
)

// ManagerRunner runs the ImageBuild manager against cfg until ctx is done.
type ManagerRunner func(ctx context.Context, cfg *rest.Config, cacheDir string) error

// demoNamespace is where the demo creates the samples.
const demoNamespace = "default"

// demoOptions are the flags of kiln demo.
type demoOptions struct {
	verbose bool
	keep    bool
	once    bool
	timeout time.Duration
}

// newDemoCmd returns the demo command: the samples of config/samples built by
// the manager (run) on a local control plane, registry and file server.
func newDemoCmd(run ManagerRunner) *cobra.Command {
	o := demoOptions{}
	cmd := &cobra.Command{
		Use:   "kiln-demo",
		Short: "Run the main job on an embedded control plane and registry",
		Long: `Starts etcd + kube-apiserver (bin/k8s), a CNCF distribution registry (bin/registry)
and a file server with generated sample tarballs on 127.0.0.1, runs the manager in-process,
applies config/samples pointed at them and waits until every ImageBuild is Ready.
It then keeps running (kubectl works against the printed kubeconfig) until Ctrl-C;
with DEMO_ONCE=1 it exits 0 right after printing. Run it from the repository
(make demo builds the binaries it needs).`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true, // main prints the error once
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.once = o.once || os.Getenv("DEMO_ONCE") == "1"
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			d := &demo{run: run, opts: o, out: cmd.OutOrStdout(), stopSignals: stop}
			return d.main(ctx)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.verbose, "verbose", "v", false, "show manager, etcd and kube-apiserver logs on stderr")
	f.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, registry storage, cache) after exit")
	f.BoolVar(&o.once, "once", false, "exit after printing the results (same as DEMO_ONCE=1)")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for the ImageBuilds to become Ready")
	return cmd
}

// demo holds the running parts; teardown undoes them in reverse order.
type demo struct {
	run         ManagerRunner
	opts        demoOptions
	out         io.Writer
	stopSignals func()

	root     string
	work     string
	cleanups []func() error
	cp       *sandbox.ControlPlane
	reg      *sandbox.Registry
	files    *sandbox.FileServer
	inputs   map[string][]byte
	client   client.Client
	mgrDone  chan error
	// publicKey is the file with the public key of the samples' signing
	// key, for the cosign commands the demo prints.
	publicKey string
}

func (d *demo) main(ctx context.Context) (err error) {
	start := time.Now()
	defer func() { err = errors.Join(err, d.teardown()) }()
	if err := d.prepare(); err != nil {
		return err
	}
	if err := d.startParts(ctx); err != nil {
		return err
	}
	builds, err := d.samples(ctx)
	if err != nil {
		return err
	}
	if err := d.startManager(ctx); err != nil {
		return err
	}
	if err := d.apply(ctx, builds); err != nil {
		return err
	}
	fprintf(d.out, "\nwaiting for %d ImageBuilds to become Ready (timeout %s)\n", len(builds), d.opts.timeout)
	done, err := d.wait(ctx, builds)
	if err != nil {
		return err
	}
	d.printTable(done)
	if err := d.report(ctx, done); err != nil {
		return err
	}
	fprintf(d.out, "\nall %d ImageBuilds Ready %s after start\n", len(done), time.Since(start).Round(100*time.Millisecond))
	if d.opts.once {
		return nil
	}
	return d.serve(ctx)
}

// prepare checks the binaries and creates the work directory and logger.
func (d *demo) prepare() error {
	root, err := sandbox.RepoRoot()
	if err != nil {
		return err
	}
	d.root = root
	if err := sandbox.CheckControlPlaneAssets(sandbox.AssetsDir(root)); err != nil {
		return fmt.Errorf("%w (or simply `make demo`)", err)
	}
	if err := sandbox.CheckRegistryBinary(sandbox.RegistryBinary(root)); err != nil {
		return fmt.Errorf("%w (or simply `make demo`)", err)
	}
	if d.work, err = os.MkdirTemp("", "kiln-demo-"); err != nil {
		return fmt.Errorf("creating the work directory: %w", err)
	}
	d.defer1(func() error {
		if d.opts.keep {
			fprintf(d.out, "kept %s\n", d.work)
			return nil
		}
		return os.RemoveAll(d.work)
	})
	fprintf(d.out, "kiln demo: work directory %s\n", d.work)
	return d.setupLogging()
}

// setupLogging sends controller-runtime and client-go logs to a file under
// the work directory so the demo's own output stays readable (-v: stderr).
func (d *demo) setupLogging() error {
	var w io.Writer = os.Stderr
	if !d.opts.verbose {
		f, err := os.Create(filepath.Join(d.work, "manager.log"))
		if err != nil {
			return fmt.Errorf("creating the manager log: %w", err)
		}
		d.defer1(f.Close)
		w = f
	}
	logger := zap.New(zap.WriteTo(w), zap.UseDevMode(d.opts.verbose))
	setLoggers(logger)
	return nil
}

func setLoggers(l logr.Logger) {
	ctrllog.SetLogger(l)
	klog.SetLogger(l)
}

// defer1 registers a teardown step; teardown runs them last-in first-out.
func (d *demo) defer1(f func() error) { d.cleanups = append(d.cleanups, f) }

func (d *demo) teardown() error {
	if len(d.cleanups) == 0 {
		return nil
	}
	fprintf(d.out, "tearing down\n")
	var errs []error
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		errs = append(errs, d.cleanups[i]())
	}
	d.cleanups = nil
	return errors.Join(errs...)
}

// startParts starts the control plane and the registry and generates the
// inputs concurrently: the control plane dominates, the rest hides behind it.
func (d *demo) startParts(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	var cpTime, regTime time.Duration
	g.Go(func() error {
		t := time.Now()
		o := sandbox.ControlPlaneOptions{Root: d.root}
		if d.opts.verbose {
			o.Output = os.Stderr
		}
		cp, err := sandbox.StartControlPlane(gctx, o)
		d.cp, cpTime = cp, time.Since(t)
		return err
	})
	g.Go(func() error {
		t := time.Now()
		reg, err := sandbox.StartRegistry(gctx, sandbox.RegistryOptions{
			Binary: sandbox.RegistryBinary(d.root), Dir: filepath.Join(d.work, "registry"),
		})
		d.reg, regTime = reg, time.Since(t)
		return err
	})
	g.Go(func() error {
		files, err := sandbox.GenerateInputs()
		if err != nil {
			return err
		}
		d.inputs = files
		_, err = sandbox.WriteInputs(filepath.Join(d.work, "files"), files)
		return err
	})
	err := g.Wait()
	// Register teardown for whatever started, even when another part failed.
	if d.cp != nil {
		d.defer1(d.cp.Stop)
	}
	if d.reg != nil {
		d.defer1(d.reg.Stop)
	}
	if err != nil {
		return err
	}
	fs, err := sandbox.StartFileServer(filepath.Join(d.work, "files"))
	if err != nil {
		return err
	}
	d.defer1(fs.Close)
	d.files = fs
	cfg := d.cp.Config()
	fprintf(d.out, "  control plane  %-28s %s\n", cfg.Host, cpTime.Round(100*time.Millisecond))
	fprintf(d.out, "  registry       %-28s %s  (access log: %s)\n", d.reg.Addr(), regTime.Round(10*time.Millisecond), d.reg.LogPath())
	fprintf(d.out, "  file server    %-28s %s\n", "http://"+fs.Addr(), d.inputSummary())
	return d.newClient(cfg)
}

func (d *demo) inputSummary() string {
	names := make([]string, 0, len(d.inputs))
	for n := range d.inputs {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s (%s)", n, units.Bytes(int64(len(d.inputs[n]))))
	}
	return strings.Join(parts, ", ")
}

func (d *demo) newClient(cfg *rest.Config) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := kilnv1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating a client for the control plane: %w", err)
	}
	d.client = c
	return nil
}

// samples loads config/samples, points them at the local parts and pushes
// the bases they start from.
func (d *demo) samples(ctx context.Context) ([]*kilnv1.ImageBuild, error) {
	builds, err := sandbox.LoadSamples(filepath.Join(d.root, "config", "samples"))
	if err != nil {
		return nil, err
	}
	rw := sandbox.Rewriter{Registry: d.reg.Addr(), FileURL: d.files.URL}
	for _, ib := range builds {
		if err := rw.Rewrite(ib); err != nil {
			return nil, fmt.Errorf("rewriting samples: %w", err)
		}
		ib.Namespace = demoNamespace
	}
	pushed, err := sandbox.PushBases(ctx, builds)
	if err != nil {
		return nil, err
	}
	for _, p := range pushed {
		fprintf(d.out, "  base pushed    %s\n", p)
	}
	return builds, nil
}

// startManager runs the manager in-process; its cache lives in the work dir.
func (d *demo) startManager(ctx context.Context) error {
	cacheDir := filepath.Join(d.work, "cache")
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("creating the cache directory: %w", err)
	}
	mctx, cancel := context.WithCancel(ctx)
	d.mgrDone = make(chan error, 1)
	cfg := d.cp.Config()
	go func() { d.mgrDone <- d.run(mctx, cfg, cacheDir) }()
	d.defer1(func() error {
		cancel()
		select {
		case err := <-d.mgrDone:
			if err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("manager: %w", err)
			}
			return nil
		case <-time.After(30 * time.Second):
			return errors.New("manager did not stop within 30s of cancellation")
		}
	})
	where := filepath.Join(d.work, "manager.log")
	if d.opts.verbose {
		where = "stderr"
	}
	fprintf(d.out, "  manager        in-process, cache %s, logs %s\n", cacheDir, where)
	return nil
}

// apply creates the ConfigMaps the samples reference, then the samples.
func (d *demo) apply(ctx context.Context, builds []*kilnv1.ImageBuild) error {
	cms, err := sandbox.ConfigMapsFor(builds, demoNamespace, d.inputs)
	if err != nil {
		return err
	}
	secrets, pub, err := sandbox.SigningSecretsFor(builds, demoNamespace)
	if err != nil {
		return err
	}
	var created []string
	for _, sec := range secrets {
		if err := d.client.Create(ctx, sec); err != nil {
			return fmt.Errorf("creating Secret %s: %w", sec.Name, err)
		}
		created = append(created, "secret/"+sec.Name)
	}
	if pub != nil {
		d.publicKey = filepath.Join(d.work, "cosign.pub")
		if err := os.WriteFile(d.publicKey, pub, 0o644); err != nil {
			return fmt.Errorf("writing the demo's public key: %w", err)
		}
	}
	for _, cm := range cms {
		if err := d.client.Create(ctx, cm); err != nil {
			return fmt.Errorf("creating ConfigMap %s: %w", cm.Name, err)
		}
		created = append(created, "configmap/"+cm.Name)
	}
	for _, ib := range builds {
		if err := d.client.Create(ctx, ib); err != nil {
			return fmt.Errorf("creating ImageBuild %s: %w", ib.Name, err)
		}
		created = append(created, "imagebuild/"+ib.Name)
	}
	fprintf(d.out, "  applied        %s\n", strings.Join(created, ", "))
	return nil
}

// wait polls until every build is Ready or one is Stalled, the manager
// exits, the timeout passes or ctx is done.
func (d *demo) wait(ctx context.Context, builds []*kilnv1.ImageBuild) ([]*kilnv1.ImageBuild, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.timeout)
	defer cancel()
	start := time.Now()
	reported := map[string]bool{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		current, stalled, err := d.poll(ctx, builds)
		if err != nil && ctx.Err() == nil {
			return nil, err
		}
		for _, ib := range current {
			if engine.IsReady(ib) && !reported[ib.Name] {
				reported[ib.Name] = true
				fprintf(d.out, "  ready          %-20s %s\n", ib.Name, time.Since(start).Round(100*time.Millisecond))
			}
		}
		if len(stalled) > 0 {
			d.printTable(current)
			return nil, &cli.ExitError{Code: 1, Err: fmt.Errorf("%s", strings.Join(stalled, "\n"))}
		}
		if len(reported) == len(builds) {
			return current, nil
		}
		select {
		case err := <-d.mgrDone:
			d.mgrDone <- err // teardown reads it again
			return nil, fmt.Errorf("manager exited before the builds were Ready: %v", err)
		case <-ctx.Done():
			return nil, d.waitFailed(ctx, builds)
		case <-tick.C:
		}
	}
}

// poll reads every build; stalled lists "name: Stalled/Reason: message" lines.
func (d *demo) poll(ctx context.Context, builds []*kilnv1.ImageBuild) ([]*kilnv1.ImageBuild, []string, error) {
	var current []*kilnv1.ImageBuild
	var stalled []string
	for _, b := range builds {
		ib := &kilnv1.ImageBuild{}
		if err := d.client.Get(ctx, client.ObjectKeyFromObject(b), ib); err != nil {
			return nil, nil, fmt.Errorf("reading ImageBuild %s: %w", b.Name, err)
		}
		current = append(current, ib)
		c := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.StalledCondition)
		if c != nil && c.Status == metav1.ConditionTrue && ib.Status.ObservedGeneration == ib.Generation {
			stalled = append(stalled, fmt.Sprintf("%s: Stalled (%s): %s", ib.Name, c.Reason, c.Message))
		}
	}
	return current, stalled, nil
}

// waitFailed explains a wait that ended without every build Ready: an
// interrupt, or the timeout, for which it prints each build's Ready condition.
func (d *demo) waitFailed(ctx context.Context, builds []*kilnv1.ImageBuild) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return &cli.ExitError{Code: 130, Err: errors.New("interrupted")}
	}
	// ctx has expired: read the final state with a context of its own.
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	current, _, err := d.poll(rctx, builds)
	if err != nil {
		return fmt.Errorf("ImageBuilds not Ready after %s, and reading them failed: %w", d.opts.timeout, err)
	}
	d.printTable(current)
	var lines []string
	for _, ib := range current {
		if engine.IsReady(ib) {
			continue
		}
		c := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReadyCondition)
		msg := "no Ready condition yet (is the manager running? see its log)"
		if c != nil {
			msg = fmt.Sprintf("Ready=%s (%s): %s", c.Status, c.Reason, c.Message)
		}
		lines = append(lines, fmt.Sprintf("%s: not Ready after %s: %s", ib.Name, d.opts.timeout, msg))
	}
	return &cli.ExitError{Code: 1, Err: errors.New(strings.Join(lines, "\n"))}
}

func readyStatus(ib *kilnv1.ImageBuild) string {
	c := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReadyCondition)
	if c == nil {
		return "Unknown"
	}
	return string(c.Status)
}

func (d *demo) printTable(builds []*kilnv1.ImageBuild) {
	fprintf(d.out, "\n")
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fprintf(tw, "NAME\tREADY\tPLATFORMS\tIMAGE\n")
	for _, ib := range builds {
		fprintf(tw, "%s\t%s\t%s\t%s\n", ib.Name, readyStatus(ib), orDash(strings.Join(ib.Status.Platforms, ",")), ib.Status.Image)
	}
	_ = tw.Flush()
	for _, ib := range builds {
		d.printPlatforms(ib)
	}
}

// printPlatforms lists the images of a multi-platform build's index, each
// with the base child it was built on.
func (d *demo) printPlatforms(ib *kilnv1.ImageBuild) {
	if len(ib.Status.Manifests) == 0 {
		return
	}
	fprintf(d.out, "\n%s: %s with %d platforms\n", ib.Name, ib.Status.MediaType, len(ib.Status.Manifests))
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fprintf(tw, "PLATFORM\tMANIFEST\tBASE CHILD\tLAYERS\n")
	for _, m := range ib.Status.Manifests {
		base := "-"
		if m.Base != nil && m.Base.Digest != "" {
			base = short(m.Base.Digest)
		}
		fprintf(tw, "%s\t%s\t%s\t%d\n", m.Platform, short(m.Digest), base, len(m.Layers))
	}
	_ = tw.Flush()
}

// report reads one image's config back from the registry (what a runtime
// would see) and lists its layers with provenance from status.
func (d *demo) report(ctx context.Context, builds []*kilnv1.ImageBuild) error {
	ib := builds[0]
	for _, b := range builds {
		if b.Name == "scratch-app" {
			ib = b
		}
	}
	ref, err := name.ParseReference(ib.Status.Image)
	if err != nil {
		return fmt.Errorf("%s: status.image %q: %w", ib.Name, ib.Status.Image, err)
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("reading %s back from the registry: %w", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("reading the config of %s: %w", ref, err)
	}
	fprintf(d.out, "\n%s: config read back from %s (%s/%s)\n", ib.Name, ref, cf.OS, cf.Architecture)
	for _, e := range cf.Config.Env {
		fprintf(d.out, "  env  %s\n", e)
	}
	fprintf(d.out, "  entrypoint %q  cmd %q  user %q  workdir %q\n", cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.User, cf.Config.WorkingDir)
	fprintf(d.out, "\n")
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fprintf(tw, "LAYER\tSOURCE\tDIGEST\tDIFFID\tSIZE\n")
	for _, l := range ib.Status.Layers {
		fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Name, orDash(l.SourceCompression), short(l.Digest), short(l.DiffID), units.Bytes(l.Size))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	d.printSignatures(ib)
	return nil
}

// printSignatures lists what was attached to a signed build and the cosign
// commands that verify it.
func (d *demo) printSignatures(ib *kilnv1.ImageBuild) {
	if len(ib.Status.Signatures) == 0 {
		return
	}
	format := ib.Spec.Signing.Cosign.Format
	if format == "" {
		format = kilnv1.SignatureBundle
	}
	fprintf(d.out, "\n%s: signed and attested (%s format)\n", ib.Name, format)
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fprintf(tw, "TYPE\tSUBJECT\tARTIFACT\n")
	for _, a := range append(append([]kilnv1.AttachedArtifact{}, ib.Status.Signatures...), ib.Status.Attestations...) {
		fprintf(tw, "%s\t%s\t%s\n", a.Type, short(a.Subject), short(a.Digest))
	}
	_ = tw.Flush()
	flags := "--key " + d.publicKey + " --insecure-ignore-tlog=true --allow-insecure-registry --allow-http-registry"
	fprintf(d.out, "  verify: cosign verify %s %s\n", flags, ib.Status.Image)
	fprintf(d.out, "          cosign verify-attestation %s --type spdxjson %s\n", flags, ib.Status.Image)
}

// serve keeps everything up for kubectl until Ctrl-C.
func (d *demo) serve(ctx context.Context) error {
	kc := filepath.Join(d.work, "kubeconfig")
	if err := d.cp.WriteKubeconfig(kc); err != nil {
		return err
	}
	fprintf(d.out, "\nkubeconfig: %s\n", kc)
	fprintf(d.out, "  kubectl --kubeconfig %s get ib\n", kc)
	fprintf(d.out, "running until Ctrl-C\n")
	<-ctx.Done()
	// A second Ctrl-C during teardown kills the process the default way.
	d.stopSignals()
	fprintf(d.out, "\n")
	return nil
}

func short(digest string) string {
	if i := strings.IndexByte(digest, ':'); i >= 0 && len(digest) > i+13 {
		return digest[:i+13]
	}
	return orDash(digest)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fprintf writes to w ignoring errors: the demo's output is best effort.
func fprintf(w io.Writer, format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
