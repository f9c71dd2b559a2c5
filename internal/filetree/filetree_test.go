package filetree

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

func i64(v int64) *int64 { return &v }

// entry is what a reader sees of one tar entry.
type entry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	body     string
	mtime    int64
	names    string
	pax      bool
}

func read(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	for _, e := range testkit.ReadTar(t, bytes.NewReader(b)) {
		h := e.Header
		out = append(out, entry{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, string(e.Body), h.ModTime.Unix(),
			h.Uname + h.Gname, h.Format == tar.FormatPAX})
	}
	return out
}

func TestTar(t *testing.T) {
	created := time.Date(2025, 3, 1, 12, 0, 0, 500, time.UTC)
	long := "/d/" + strings.Repeat("f", 200) // no ustar prefix split fits
	tests := []struct {
		name  string
		files []File
		opts  Options
		want  []entry
	}{{
		name: "parents created once, sorted, defaults",
		files: []File{
			{Path: "/etc/app/b.yaml", Ref: "files[0]", Data: []byte("b")},
			{Path: "/etc/app/a.yaml", Ref: "files[1]", Data: []byte("a")},
			{Path: "/srv/x", Ref: "files[2]"},
		},
		want: []entry{
			{name: "etc/", typ: tar.TypeDir, mode: 0o755},
			{name: "etc/app/", typ: tar.TypeDir, mode: 0o755},
			{name: "etc/app/a.yaml", typ: tar.TypeReg, mode: 0o644, body: "a"},
			{name: "etc/app/b.yaml", typ: tar.TypeReg, mode: 0o644, body: "b"},
			{name: "srv/", typ: tar.TypeDir, mode: 0o755},
			{name: "srv/x", typ: tar.TypeReg, mode: 0o644},
		},
	}, {
		name: "entry mode and owner beat the options, options beat the defaults",
		files: []File{
			{Path: "/a", Ref: "files[0]", Mode: i64(0o600), UID: i64(1000), GID: i64(2000)},
			{Path: "/d/b", Ref: "files[1]"},
		},
		opts: Options{FileMode: i64(0o640), DirMode: i64(0o750), UID: i64(7), GID: i64(8)},
		want: []entry{
			{name: "a", typ: tar.TypeReg, mode: 0o600, uid: 1000, gid: 2000},
			{name: "d/", typ: tar.TypeDir, mode: 0o750, uid: 7, gid: 8},
			{name: "d/b", typ: tar.TypeReg, mode: 0o640, uid: 7, gid: 8},
		},
	}, {
		name: "a symlink has no body and mode 0777",
		files: []File{
			{Path: "/bin/tool", Ref: "f[0]", Data: []byte("#!"), Mode: i64(0o700)},
			{Path: "/bin/t", Ref: "f[1]", Link: "tool", Data: []byte("ignored")},
		},
		want: []entry{
			{name: "bin/", typ: tar.TypeDir, mode: 0o755},
			{name: "bin/t", typ: tar.TypeSymlink, mode: 0o777},
			{name: "bin/tool", typ: tar.TypeReg, mode: 0o700, body: "#!"},
		},
	}, {
		name:  "a long path takes PAX",
		files: []File{{Path: long, Ref: "files[0]", Data: []byte("x")}},
		want: []entry{
			{name: "d/", typ: tar.TypeDir, mode: 0o755},
			{name: long[1:], typ: tar.TypeReg, mode: 0o644, body: "x", pax: true},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Created = created
			b, err := Tar(tt.files, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			for i := range tt.want {
				tt.want[i].mtime = created.Unix()
			}
			got := read(t, b)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("entries\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

// The bytes depend on the files only: not on their order or GOMAXPROCS.
func TestTarDeterministic(t *testing.T) {
	files := []File{
		{Path: "/b/2", Ref: "a", Data: []byte("two")},
		{Path: "/a/1", Ref: "b", Data: []byte("one")},
		{Path: "/b/1", Ref: "c", Data: bytes.Repeat([]byte("x"), 5000)},
	}
	want, err := Tar(files, Options{Created: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 2, 8} {
		runtime.GOMAXPROCS(procs)
		reversed := []File{files[2], files[1], files[0]}
		for _, fs := range [][]File{files, reversed} {
			got, err := Tar(fs, Options{Created: time.Unix(1700000000, 0)})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("GOMAXPROCS=%d: bytes differ", procs)
			}
		}
	}
}

func TestTarRejects(t *testing.T) {
	tests := []struct {
		name  string
		files []File
		want  string
	}{
		{"relative", []File{{Path: "etc/x", Ref: "files[0]"}}, `layer "cfg": files[0]: path "etc/x" must be absolute`},
		{"root", []File{{Path: "/", Ref: "files[0]"}}, `layer "cfg": files[0]: path "/" must name a file, not the root`},
		{"dotdot", []File{{Path: "/a/../b", Ref: "files[0]"}}, `layer "cfg": files[0]: path "/a/../b" must not contain ".."`},
		{"unclean", []File{{Path: "/a//b/", Ref: "files[0]"}}, `layer "cfg": files[0]: path "/a//b/" must be clean (want "/a/b")`},
		{"dot", []File{{Path: "/a/./b", Ref: "files[0]"}}, `layer "cfg": files[0]: path "/a/./b" must be clean (want "/a/b")`},
		{"nul", []File{{Path: "/a\x00b", Ref: "files[0]"}}, `layer "cfg": files[0]: path "/a\x00b" must not contain NUL`},
		{"duplicate", []File{{Path: "/a", Ref: "files[0]"}, {Path: "/a", Ref: "configMap web key a"}},
			`layer "cfg": files[0] and configMap web key a both write "/a"`},
		{"file is a parent", []File{{Path: "/a/b", Ref: "files[0]"}, {Path: "/a", Ref: "files[1]"}},
			`layer "cfg": files[1] writes "/a", which files[0] needs as a directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Tar(tt.files, Options{Layer: "cfg"})
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %s", err, tt.want)
			}
			if failure.ReasonOf(err) != failure.InvalidSpec || !failure.IsPermanent(err) {
				t.Errorf("reason %q, want permanent InvalidSpec", failure.ReasonOf(err))
			}
			var le *failure.LayerError
			if !errors.As(err, &le) || le.Layer != "cfg" {
				t.Errorf("not a LayerError for cfg: %v", err)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{{"0644", 0o644, false}, {"755", 0o755, false}, {"4755", 0o4755, false}, {"07777", 0o7777, false},
		{"", -1, false}, {"64", 0, true}, {"0689", 0, true}, {"17777", 0, true}, {"0x644", 0, true}}
	for _, tt := range tests {
		got, err := ParseMode(tt.in)
		switch {
		case tt.err:
			if err == nil {
				t.Errorf("%q: no error", tt.in)
			}
		case err != nil:
			t.Errorf("%q: %v", tt.in, err)
		case tt.want == -1 && got != nil, tt.want >= 0 && (got == nil || *got != tt.want):
			t.Errorf("%q: got %v, want %o", tt.in, got, tt.want)
		}
	}
}
