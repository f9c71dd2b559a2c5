package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/testkit"
)

// referenceFiles lists the regular files of a tar with archive/tar, the way
// an SBOM reader of the pushed layer would: cleaned names, content hashed
// after the fact. Whiteouts are markers, not files.
func referenceFiles(t testing.TB, data []byte) []File {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out []File
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading the output: %v", err)
		}
		p := path.Clean(h.Name)
		if !isRegular(h.Typeflag) || strings.HasPrefix(path.Base(p), ".wh.") {
			continue
		}
		hh := sha256.New()
		n, err := io.Copy(hh, tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, File{Path: p, Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(hh.Sum(nil))}, Size: n})
	}
}

func TestFileListMatchesOutput(t *testing.T) {
	mode := int64(0o600)
	for _, tc := range []struct {
		name    string
		opts    Options
		entries []testkit.Entry
		want    []string // paths, in order
	}{{
		name: "minimal keeps ./ names, lists cleaned paths",
		entries: []testkit.Entry{testkit.Dir("./"), testkit.Dir("./etc/"), testkit.File("./etc/hosts", "127.0.0.1 localhost\n"),
			testkit.File("./empty", ""), testkit.Symlink("./etc/link", "hosts"), testkit.Hardlink("./etc/hosts2", "./etc/hosts"),
			{Name: "dev", Type: tar.TypeFifo}, testkit.File("./etc/.wh.old", ""), testkit.File("big", strings.Repeat("x", 600<<10))},
		want: []string{"etc/hosts", "empty", "big"},
	}, {
		name:    "reproducible rewrites names, same list",
		opts:    Options{Mode: Reproducible},
		entries: []testkit.Entry{testkit.Dir("./usr/"), testkit.File("./usr/a", "a"), testkit.File("usr/b/../c", "c"), testkit.Hardlink("usr/d", "usr/a")},
		want:    []string{"usr/a", "usr/c"},
	}, {
		name:    "overrides rewrite headers, bodies hashed the same",
		opts:    Options{Overrides: Overrides{FileMode: &mode}},
		entries: []testkit.Entry{testkit.File("bin/tool", "#!/bin/sh\n").WithMode(0o755), testkit.File("conf", "k=v")},
		want:    []string{"bin/tool", "conf"},
	}, {
		name: "windows shaping: paths as they land, under Files/ and Hives/",
		opts: Options{Windows: true},
		entries: []testkit.Entry{testkit.Dir("app"), testkit.File("app/x.exe", "MZ"), testkit.File(`app\y.dll`, "MZ2"),
			testkit.File("Hives/DefaultUser_Delta", "regf")},
		want: []string{"Files/app/x.exe", "Files/app/y.dll", "Hives/DefaultUser_Delta"},
	}, {
		name:    "windows reproducible",
		opts:    Options{Windows: true, Mode: Reproducible},
		entries: []testkit.Entry{testkit.File("Files/a.txt", "a"), testkit.File("b.txt", "b")},
		want:    []string{"Files/a.txt", "Files/b.txt"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := testkit.Tar(t, tc.entries...)
			opts := tc.opts
			opts.Files = NewFileList(0)
			out, _, err := normalize(t, in, opts)
			if err != nil {
				t.Fatal(err)
			}
			ref := referenceFiles(t, out)
			if !reflect.DeepEqual(opts.Files.Files, ref) {
				t.Errorf("file list\n got %+v\nwant %+v (archive/tar on the output)", opts.Files.Files, ref)
			}
			var got []string
			for _, f := range opts.Files.Files {
				got = append(got, f.Path)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("paths = %q, want %q", got, tc.want)
			}
			if opts.Files.Count != len(tc.want) || opts.Files.Omitted {
				t.Errorf("count %d omitted %v, want %d and false", opts.Files.Count, opts.Files.Omitted, len(tc.want))
			}
		})
	}
}

func TestFileListCap(t *testing.T) {
	entries := []testkit.Entry{testkit.File("a", "1"), testkit.File("b", "2"), testkit.File("c", "3")}
	for _, tc := range []struct {
		max     int
		omitted bool
		listed  int
	}{{max: 2, omitted: true}, {max: 3, listed: 3}, {max: 0, listed: 3}} {
		fl := NewFileList(tc.max)
		out, _, err := normalize(t, testkit.Tar(t, entries...), Options{Files: fl})
		if err != nil {
			t.Fatalf("max %d: a capped list must never fail the layer: %v", tc.max, err)
		}
		if fl.Omitted != tc.omitted || len(fl.Files) != tc.listed || fl.Count != 3 {
			t.Errorf("max %d: omitted %v, %d listed, count %d; want %v, %d, 3", tc.max, fl.Omitted, len(fl.Files), fl.Count, tc.omitted, tc.listed)
		}
		if !bytes.Equal(out, testkit.Tar(t, entries...)) {
			t.Errorf("max %d: listing changed the output", tc.max)
		}
	}
}

// TestFileListBuild covers Build's paths: the fast path (clean gzip input
// becomes the blob), the fast path giving up half-way (the list must not
// hold the first pass's files twice), the encode path, the spooled xz path;
// and ListFiles on the stored blob giving the same list.
func TestFileListBuild(t *testing.T) {
	clean := testkit.Tar(t, testkit.Dir("d/"), testkit.File("d/a", "alpha"), testkit.File("d/b", strings.Repeat("b", 70000)))
	dirty := testkit.Tar(t, testkit.File("d/a", "alpha"), testkit.File("./d//b", "beta"), testkit.Entry{Name: "d/c", Body: "c", Uname: "root"})
	for _, tc := range []struct {
		name string
		in   []byte
		opts BuildOptions
		fast bool
	}{
		{name: "fast path", in: testkit.Gzip(t, clean), fast: true},
		{name: "fast path gives up", in: testkit.Gzip(t, dirty), opts: BuildOptions{Options: Options{Mode: Reproducible}}},
		{name: "encode", in: clean},
		{name: "zstd out", in: testkit.Zstd(t, dirty), opts: BuildOptions{Output: compression.Zstd, Options: Options{Mode: Reproducible}}},
		{name: "xz", in: testkit.Xz(t, dirty)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			opts := tc.opts
			opts.Files = NewFileList(0)
			res, err := Build(context.Background(), bytes.NewReader(tc.in), opts, s)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Release()
			if fast := res.Digest == testkit.Hash(tc.in); fast != tc.fast {
				t.Fatalf("fast path = %v, want %v", fast, tc.fast)
			}
			blob, err := os.ReadFile(s.Path(res.Digest))
			if err != nil {
				t.Fatal(err)
			}
			alg := compression.Gzip
			if opts.Output == compression.Zstd {
				alg = compression.Zstd
			}
			dec, err := compression.NewReader(bytes.NewReader(blob), alg, compression.ReaderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tarBytes, err := io.ReadAll(dec)
			if err != nil {
				t.Fatal(err)
			}
			ref := referenceFiles(t, tarBytes)
			if !reflect.DeepEqual(opts.Files.Files, ref) || opts.Files.Count != len(ref) {
				t.Errorf("file list\n got %+v\nwant %+v", opts.Files, ref)
			}
			again, err := ListFiles(bytes.NewReader(blob), alg, Limits{}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, opts.Files) {
				t.Errorf("ListFiles of the stored blob = %+v, want %+v", again, opts.Files)
			}
		})
	}
}

// TestListFilesWindowsBlob: a stored Windows layer is read back with its
// shaped paths, not shaped again.
func TestListFilesWindowsBlob(t *testing.T) {
	fl := NewFileList(0)
	out, _, err := normalize(t, testkit.Tar(t, testkit.File("app/x.exe", "MZ")), Options{Windows: true, Files: fl})
	if err != nil {
		t.Fatal(err)
	}
	again, err := ListFiles(bytes.NewReader(out), compression.None, Limits{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, fl) || len(fl.Files) != 1 || fl.Files[0].Path != "Files/app/x.exe" {
		t.Errorf("ListFiles = %+v, want %+v", again, fl)
	}
	if _, err := ListFiles(strings.NewReader("not a tar"), compression.None, Limits{}, 0); err == nil {
		t.Error("ListFiles of garbage: no error")
	}
}
