// Command image builds kiln's own image with kiln, without a Docker engine.
// `make image` runs it after `make build`:
//
//	go run ./hack/image -kiln bin/kiln -img IMG -version VERSION [-ca PEM] [-out bin/image.ref] [-- kiln build flags]
//
// It packs the static binary, and the host's CA bundle with an empty /tmp,
// into two reproducible layer tarballs, serves them on a loopback port,
// renders config/image/kiln.yaml (scratch, user 65532:65532, entrypoint
// /kiln, cmd manager, OCI labels with the version and the commit) and runs
// `<kiln> build -f` on it, so the binary being packaged builds its own image.
// created is the commit time: the same commit, binary and CA bundle give the
// same digest. The pushed reference is written to -out as "IMG REF" (the
// image asked for, then repository@digest), which `make build-installer`
// pins the manager Deployment to when IMG matches.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/config/image"
)

type options struct {
	kiln     string // the binary to package, which also runs the build
	img      string
	version  string
	revision string // "" reads git
	created  string // RFC 3339; "" reads git
	source   string
	ca       string // "" finds the host's bundle
	out      string
	// buildArgs are passed to kiln build, e.g. --cache-dir.
	buildArgs []string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kiln, "kiln", "bin/kiln", "the static linux kiln binary to package (and build with)")
	fs.StringVar(&o.img, "img", "", "the image to push, e.g. ghcr.io/kiln-build/kiln:latest")
	fs.StringVar(&o.version, "version", "", "org.opencontainers.image.version, e.g. `git describe --tags --always --dirty`")
	fs.StringVar(&o.revision, "revision", "", "org.opencontainers.image.revision; default: git rev-parse HEAD")
	fs.StringVar(&o.created, "created", "", "the image's created time (RFC 3339); default: the commit time of HEAD")
	fs.StringVar(&o.source, "source", "https://github.com/kiln-build/kiln", "org.opencontainers.image.source")
	fs.StringVar(&o.ca, "ca", "", "the PEM CA bundle to put at /etc/ssl/certs/ca-certificates.crt; default: the host's")
	fs.StringVar(&o.out, "out", "bin/image.ref", "file to write \"IMG repository@digest\" to; empty for none")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.buildArgs = fs.Args()
	if o.img == "" || o.version == "" {
		return o, errors.New("-img and -version are required")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, stdout io.Writer) error {
	if o.out != "" {
		// A failed run must not leave the previous run's pin behind.
		if err := os.Remove(o.out); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing the previous %s: %w", o.out, err)
		}
	}
	created, err := commitFacts(&o)
	if err != nil {
		return err
	}
	platform, err := platformOf(o.kiln)
	if err != nil {
		return err
	}
	ca, err := caBundle(o.ca)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "kiln-image-")
	if err != nil {
		return fmt.Errorf("creating a work directory: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ib, err := buildImage(ctx, o, dir, platform, ca, created)
	if err != nil {
		return err
	}
	return report(stdout, o, ib)
}

// buildImage packs and serves the layers and runs kiln build on the
// rendered spec; it returns the built ImageBuild with its status.
func buildImage(ctx context.Context, o options, dir, platform, ca string, created time.Time) (*kilnv1.ImageBuild, error) {
	sys, err := pack(filepath.Join(dir, "system.tar"), systemFiles(ca), created)
	if err != nil {
		return nil, err
	}
	bin, err := pack(filepath.Join(dir, "kiln.tar"), kilnFiles(o.kiln), created)
	if err != nil {
		return nil, err
	}
	srv, err := serve(map[string]string{"system.tar": sys.path, "kiln.tar": bin.path}, created)
	if err != nil {
		return nil, err
	}
	defer func() { _ = srv.close() }()
	doc, err := image.Render(image.Values{
		"IMG": o.img, "VERSION": o.version, "REVISION": o.revision, "SOURCE": o.source,
		"CREATED": created.Format(time.RFC3339), "PLATFORM": platform,
		"SYSTEM_URL": srv.url("system.tar"), "SYSTEM_DIGEST": sys.digest,
		"KILN_URL": srv.url("kiln.tar"), "KILN_DIGEST": bin.digest,
	})
	if err != nil {
		return nil, err
	}
	spec := filepath.Join(dir, "kiln.yaml")
	if err := os.WriteFile(spec, doc, 0o644); err != nil {
		return nil, fmt.Errorf("writing the rendered spec: %w", err)
	}
	return kilnBuild(ctx, o.kiln, spec, o.buildArgs)
}

// commitFacts fills in the revision and returns the created time, from git
// unless given: created is the commit time, so that building the same
// commit again gives the same digest (the clock never enters the image).
func commitFacts(o *options) (time.Time, error) {
	var err error
	if o.revision == "" {
		if o.revision, err = git("rev-parse", "HEAD"); err != nil {
			return time.Time{}, err
		}
	}
	if o.created != "" {
		t, err := time.Parse(time.RFC3339, o.created)
		if err != nil {
			return time.Time{}, fmt.Errorf("-created: %w", err)
		}
		return t.UTC(), nil
	}
	secs, err := git("show", "-s", "--format=%ct", "HEAD")
	if err != nil {
		return time.Time{}, err
	}
	n, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the commit time: git printed %q", secs)
	}
	return time.Unix(n, 0).UTC(), nil
}

func git(args ...string) (string, error) {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return "", fmt.Errorf("git %s (outside a git checkout pass -revision and -created): %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// kilnBuild runs `kiln build -f spec -o json` and returns the printed
// ImageBuild; an error unless it is Ready. kiln's own messages (progress,
// the failure line) go to stderr as they come.
func kilnBuild(ctx context.Context, kiln, spec string, args []string) (*kilnv1.ImageBuild, error) {
	cmd := exec.CommandContext(ctx, kiln, append([]string{"build", "-f", spec, "-o", "json"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	runErr := cmd.Run()
	ib := &kilnv1.ImageBuild{}
	if err := json.Unmarshal(out.Bytes(), ib); err != nil {
		return nil, errors.Join(fmt.Errorf("%s build printed no ImageBuild: %w", kiln, err), runErr)
	}
	ready := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReadyCondition)
	if ready == nil || ready.Status != metav1.ConditionTrue {
		msg := "no Ready condition"
		if ready != nil {
			msg = ready.Reason + ": " + ready.Message
		}
		return nil, errors.Join(fmt.Errorf("%s build did not push the image: %s", kiln, msg), runErr)
	}
	if runErr != nil {
		return nil, fmt.Errorf("%s build: %w", kiln, runErr)
	}
	return ib, nil
}

// report prints what was pushed and records it in o.out.
func report(w io.Writer, o options, ib *kilnv1.ImageBuild) error {
	st := ib.Status
	var size, tarSize int64
	for _, l := range st.Layers {
		size += l.Size
		tarSize += l.UncompressedSize
	}
	result := ""
	if st.LastBuild != nil {
		result = string(st.LastBuild.Result)
	}
	_, err := fmt.Fprintf(w, "image: %s %s (%s, %s, %d layers: %.1f MiB pushed, %.1f MiB unpacked)\n",
		result, st.Image, ib.Spec.Base.Platform, o.version, len(st.Layers), mib(size), mib(tarSize))
	if err != nil || o.out == "" {
		return err
	}
	if err := os.WriteFile(o.out, []byte(o.img+" "+st.Image+"\n"), 0o644); err != nil {
		return fmt.Errorf("recording the pushed image: %w", err)
	}
	_, err = fmt.Fprintf(w, "image: wrote %s (make build-installer IMG=%s pins the Deployment to it)\n", o.out, o.img)
	return err
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
