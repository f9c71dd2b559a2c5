package cli_test

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/ulikunitz/xz"

	"github.com/kiln-build/kiln/internal/cli"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/source"
)

// kiln manager, build and plan take exactly the limit flags BindLimitFlags
// defines, with the same defaults and help.
func TestLimitFlagsAreSharedByManagerAndBuild(t *testing.T) {
	ref := &cobra.Command{}
	var (
		src source.Options
		lim layer.Limits
		d   time.Duration
	)
	cli.BindLimitFlags(ref, &src, &lim, &d)
	names := []string{"max-source-bytes", "source-read-timeout", "min-transfer-rate", "min-transfer-window",
		"max-layer-bytes", "max-layer-entries", "max-compression-ratio", "max-decoder-memory", "build-timeout"}
	if n := strings.Count(ref.Flags().FlagUsages(), "\n"); n != len(names) {
		t.Fatalf("BindLimitFlags defines %d flags, the test knows %d:\n%s", n, len(names), ref.Flags().FlagUsages())
	}
	root := cli.NewRoot(cli.NewManagerCmd())
	for _, sub := range []string{"manager", "build", "plan"} {
		cmd, _, err := root.Find([]string{sub})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			want, got := ref.Flags().Lookup(n), cmd.Flags().Lookup(n)
			if want == nil || got == nil || got.Usage != want.Usage || got.DefValue != want.DefValue {
				t.Errorf("kiln %s --%s = %+v, want %+v", sub, n, got, want)
			}
		}
	}
	if err := ref.ParseFlags([]string{"--min-transfer-rate=2048", "--min-transfer-window=30s", "--build-timeout=5m", "--max-decoder-memory=1048576"}); err != nil {
		t.Fatal(err)
	}
	if src.MinRate != 2048 || src.MinRateWindow != 30*time.Second || d != 5*time.Minute || lim.MaxDecoderMemory != 1<<20 {
		t.Errorf("parsed: rate %d window %s timeout %s decoder memory %d", src.MinRate, src.MinRateWindow, d, lim.MaxDecoderMemory)
	}
}

// --build-timeout reaches kiln build's engine.
func TestBuildTimeoutFlag(t *testing.T) {
	spec := `apiVersion: v1
kind: ConfigMap
metadata: {name: files}
data: {app.tar: "not read in time"}
---
apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: app}
spec:
  layers:
  - name: app
    source: {configMap: {name: files, key: app.tar}}
  target: {image: 127.0.0.1:1/team/app:1}
`
	stderr, exit := buildFile(t, spec, "--build-timeout=1ns")
	if exit != 1 || !strings.Contains(stderr, "LimitExceeded: build exceeded its deadline of 1ns (--build-timeout)") {
		t.Fatalf("exit %d, stderr:\n%s", exit, stderr)
	}
}

// --max-decoder-memory reaches the layer decoders of kiln build's engine.
func TestMaxDecoderMemoryFlag(t *testing.T) {
	var xzTar bytes.Buffer
	zw, err := xz.NewWriter(&xzTar) // an 8 MiB dictionary
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "a", Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		t.Fatal(err)
	}
	spec := `apiVersion: v1
kind: ConfigMap
metadata: {name: files}
binaryData: {app.tar.xz: ` + base64.StdEncoding.EncodeToString(xzTar.Bytes()) + `}
---
apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: app}
spec:
  layers:
  - name: app
    source: {configMap: {name: files, key: app.tar.xz}}
  target: {image: 127.0.0.1:1/team/app:1}
`
	stderr, exit := buildFile(t, spec, "--max-decoder-memory=1048576")
	if exit != 1 || !strings.Contains(stderr, `layer "app": xz: block 0 needs a 8 MiB dictionary, above the 1 MiB limit`) {
		t.Fatalf("exit %d, stderr:\n%s", exit, stderr)
	}
}

// buildFile runs kiln build on spec with flags and returns stderr and the
// exit code.
func buildFile(t *testing.T, spec string, flags ...string) (string, int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ib.yaml")
	if err := os.WriteFile(file, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	root := cli.NewRoot()
	var out, errOut strings.Builder
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"build", "-f", file, "--cache-dir", t.TempDir(), "--progress=false"}, flags...))
	exit := cli.ExitCode(root.Execute())
	return errOut.String(), exit
}
