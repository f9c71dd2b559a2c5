package artifact

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/filetree"
	"github.com/kiln-build/kiln/internal/testkit"
)

// sourceController is an artifact as source-controller archives a
// repository: files 0600 (an executable 0700), directories 0750.
func sourceController(t *testing.T) []byte {
	return testkit.Tar(t,
		testkit.Dir("deploy/").WithMode(0o750),
		testkit.Dir("deploy/base/").WithMode(0o750),
		testkit.File("deploy/base/app.yaml", "app").WithMode(0o600),
		testkit.File("deploy/base/run.sh", "#!/bin/sh").WithMode(0o700),
		testkit.Symlink("deploy/base/current", "app.yaml"),
		testkit.Symlink("deploy/link", "base"),
		testkit.Symlink("deploy/out", "../../../etc"),
		testkit.Symlink("deploy/up", "../../.."),
		testkit.File("README.md", "hi").WithMode(0o600),
	)
}

func show(fs []filetree.File) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%s %o", f.Path, *f.Mode)
		if f.Link != "" {
			fmt.Fprintf(&b, " -> %s", f.Link)
		} else {
			fmt.Fprintf(&b, " %q", f.Data)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestFiles(t *testing.T) {
	tree, err := ReadTar(bytes.NewReader(sourceController(t)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, sub, target, want string
	}{
		{"subdirectory under a target", "./deploy/base", "/opt/config", "" +
			"/opt/config/app.yaml 600 \"app\"\n" +
			"/opt/config/current 600 -> app.yaml\n" +
			"/opt/config/run.sh 700 \"#!/bin/sh\"\n"},
		{"a symlink on the way is followed inside the artifact", "deploy/link/", "", "" +
			"/app.yaml 600 \"app\"\n" +
			"/current 600 -> app.yaml\n" +
			"/run.sh 700 \"#!/bin/sh\"\n"},
		{"a symlink leading out is clamped at the root", "deploy/up/deploy/base", "/x", "" +
			"/x/app.yaml 600 \"app\"\n" +
			"/x/current 600 -> app.yaml\n" +
			"/x/run.sh 700 \"#!/bin/sh\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := tree.Files("cfg", tt.sub, tt.target)
			if err != nil {
				t.Fatal(err)
			}
			// A symlink's mode field is whatever the tar said; filetree writes 0777.
			if got := show(fs); strings.ReplaceAll(got, "777 ->", "600 ->") != tt.want {
				t.Errorf("files\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestFilesRefuse(t *testing.T) {
	tree, err := ReadTar(bytes.NewReader(sourceController(t)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, sub, target string
		reason            failure.Reason
		want              string
	}{
		{"the whole artifact keeps a symlink leading out", "", "/", failure.InvalidLayer,
			`layer "cfg": artifact symlink "deploy/out" -> "../../../etc" leads out of the layer's path "/"`},
		{"missing path", "deploy/overlays", "/", failure.SourceNotFound, `layer "cfg": path "deploy/overlays" is not in the artifact`},
		{"a file as path", "README.md", "/", failure.InvalidSpec, `layer "cfg": path "README.md" is a file of the artifact, not a directory`},
		{"relative targetDir", "deploy/base", "opt", failure.InvalidSpec, `layer "cfg": targetDir "opt" must be absolute and clean (want "/opt")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tree.Files("cfg", tt.sub, tt.target)
			if err == nil || err.Error() != tt.want || failure.ReasonOf(err) != tt.reason {
				t.Fatalf("err %v (%s), want %q (%s)", err, failure.ReasonOf(err), tt.want, tt.reason)
			}
		})
	}
}

func TestReadTarRefuses(t *testing.T) {
	tests := []struct {
		name    string
		entries []testkit.Entry
		want    string
	}{
		{"dotdot name", []testkit.Entry{testkit.File("../evil", "x")}, `artifact entry "../evil" leads out of the artifact`},
		{"device", []testkit.Entry{{Name: "dev", Type: '3'}}, `artifact entry "dev" has tar type '3'`},
		{"dangling hard link", []testkit.Entry{testkit.Hardlink("a", "b")}, `artifact entry "a" is a hard link to "b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadTar(bytes.NewReader(testkit.Tar(t, tt.entries...)), Limits{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || failure.ReasonOf(err) != failure.InvalidLayer {
				t.Fatalf("err %v, want %q (InvalidLayer)", err, tt.want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	b := testkit.Tar(t, testkit.File("a", "12345"), testkit.File("b", "6"))
	if _, err := ReadTar(bytes.NewReader(b), Limits{MaxBytes: 5}); failure.ReasonOf(err) != failure.LimitExceeded {
		t.Errorf("bytes: err %v, want LimitExceeded", err)
	}
	if _, err := ReadTar(bytes.NewReader(b), Limits{MaxEntries: 1}); failure.ReasonOf(err) != failure.LimitExceeded {
		t.Errorf("entries: err %v, want LimitExceeded", err)
	}
}

// A checkout gives the same files as the artifact of its commit.
func TestReadDirMatchesReadTar(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "deploy", "base"), 0o750))
	must(os.MkdirAll(filepath.Join(dir, ".git", "objects"), 0o755))
	must(os.WriteFile(filepath.Join(dir, ".git", "HEAD"), []byte("ref"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "deploy", "base", "app.yaml"), []byte("app"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "deploy", "base", "run.sh"), []byte("#!/bin/sh"), 0o700))
	must(os.Symlink("app.yaml", filepath.Join(dir, "deploy", "base", "current")))
	must(os.WriteFile(filepath.Join(dir, "README.md"), []byte("hi"), 0o600))
	fromDir, err := ReadDir(dir, Limits{})
	must(err)
	fromTar, err := ReadTar(bytes.NewReader(testkit.Tar(t,
		testkit.Dir("deploy/").WithMode(0o750), testkit.Dir("deploy/base/").WithMode(0o750),
		testkit.File("deploy/base/app.yaml", "app").WithMode(0o600),
		testkit.File("deploy/base/run.sh", "#!/bin/sh").WithMode(0o700),
		testkit.Symlink("deploy/base/current", "app.yaml"),
		testkit.File("README.md", "hi").WithMode(0o600))), Limits{})
	must(err)
	for _, sub := range []string{"", "deploy"} {
		a, err := fromDir.Files("cfg", sub, "/app")
		must(err)
		b, err := fromTar.Files("cfg", sub, "/app")
		must(err)
		ta, err := filetree.Tar(a, filetree.Options{Layer: "cfg"})
		must(err)
		tb, err := filetree.Tar(b, filetree.Options{Layer: "cfg"})
		must(err)
		if !bytes.Equal(ta, tb) {
			t.Errorf("path %q: directory\n%s\nartifact\n%s", sub, show(a), show(b))
		}
	}
	if _, err := ReadDir(filepath.Join(dir, "missing"), Limits{}); failure.ReasonOf(err) != failure.SourceNotFound {
		t.Errorf("missing directory: err %v, want SourceNotFound", err)
	}
	var fe *failure.Error
	if _, err := ReadDir(dir, Limits{MaxBytes: 3}); !errors.As(err, &fe) || fe.Reason != failure.LimitExceeded {
		t.Errorf("directory over the limit: err %v, want LimitExceeded", err)
	}
}
