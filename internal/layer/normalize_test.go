package layer

import (
	"archive/tar"
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

func TestNormalizeRejects(t *testing.T) {
	long := strings.Repeat("x", 2000)
	cases := []struct {
		name    string
		in      []byte
		opts    Options
		reason  failure.Reason
		wantErr string
	}{
		{"dotdot escape", testkit.Tar(t, testkit.File("etc/../../x", "a")), Options{}, failure.InvalidLayer,
			`entry 1 "etc/../../x": path escapes the layer root`},
		{"plain dotdot", testkit.Tar(t, testkit.File("../x", "a")), Options{}, failure.InvalidLayer,
			`entry 1 "../x": path escapes the layer root`},
		{"absolute dotdot", testkit.Tar(t, testkit.File("/../x", "a")), Options{Mode: Reproducible}, failure.InvalidLayer,
			`entry 1 "/../x": absolute path; entries must be relative to the layer root`},
		{"absolute file", testkit.Tar(t, testkit.Dir("etc/"), testkit.File("/etc/x", "1")), Options{}, failure.InvalidLayer,
			`entry 2 "/etc/x": absolute path; entries must be relative to the layer root`},
		{"absolute hardlink target", testkit.Tar(t, testkit.File("etc/x", "1"), testkit.Hardlink("etc/y", "/etc/x")), Options{}, failure.InvalidLayer,
			`entry 2 "etc/y": hardlink target "/etc/x": absolute path; entries must be relative to the layer root`},
		{"absolute windows name", testkit.Tar(t, testkit.File("/Windows/x", "1")), Options{Windows: true}, failure.InvalidLayer,
			`entry 1 "/Windows/x": absolute path; entries must be relative to the layer root`},
		{"windows backslash escape", testkit.Tar(t, testkit.File(`..\Hives\x`, "a")), Options{Windows: true}, failure.InvalidLayer,
			`entry 1 "..\\Hives\\x": path escapes the layer root`},
		{"windows ../Hives", testkit.Tar(t, testkit.File("app.exe", "a"), testkit.File("../Hives/SYSTEM", "a")), Options{Windows: true}, failure.InvalidLayer,
			`entry 2 "../Hives/SYSTEM": path escapes the layer root`},
		{"through symlink", testkit.Tar(t, testkit.Symlink("etc", "/tmp"), testkit.File("etc/passwd", "a")), Options{}, failure.InvalidLayer,
			`entry 2 "etc/passwd": path goes through symlink "etc" (entry 1)`},
		{"through symlink deep", testkit.Tar(t, testkit.Dir("a/"), testkit.Symlink("./a/b", "../.."), testkit.Dir("a/b/c/")), Options{}, failure.InvalidLayer,
			`entry 3 "a/b/c/": path goes through symlink "a/b" (entry 2)`},
		{"parent is a file", testkit.Tar(t, testkit.File("a", "x"), testkit.File("a/b", "y")), Options{}, failure.InvalidLayer,
			`entry 2 "a/b": parent "a" is not a directory (entry 1)`},
		{"hardlink to missing", testkit.Tar(t, testkit.Hardlink("a", "b")), Options{}, failure.InvalidLayer,
			`entry 1 "a": hardlink target "b" is not an earlier entry of this layer`},
		{"hardlink to later", testkit.Tar(t, testkit.Hardlink("a", "b"), testkit.File("b", "x")), Options{}, failure.InvalidLayer,
			`entry 1 "a": hardlink target "b" is not an earlier entry of this layer`},
		{"hardlink outside", testkit.Tar(t, testkit.File("b", "x"), testkit.Hardlink("a", "../b")), Options{}, failure.InvalidLayer,
			`entry 2 "a": hardlink target "../b": path escapes the layer root`},
		{"hardlink to dir", testkit.Tar(t, testkit.Dir("d/"), testkit.Hardlink("a", "d")), Options{}, failure.InvalidLayer,
			`entry 2 "a": hardlink target "d" is a directory`},
		{"duplicate file", testkit.Tar(t, testkit.File("./a", "1"), testkit.File("a", "2")), Options{}, failure.InvalidLayer,
			`entry 2 "a": duplicate path "a", already written by entry 1`},
		{"duplicate absolute", testkit.Tar(t, testkit.File("etc/x", "1"), testkit.File("/etc/x", "2")), Options{}, failure.InvalidLayer,
			`entry 2 "/etc/x": absolute path; entries must be relative to the layer root`},
		{"dir then file", testkit.Tar(t, testkit.Dir("a/"), testkit.File("a", "2")), Options{}, failure.InvalidLayer,
			`entry 2 "a": duplicate path "a", already written by entry 1`},
		{"file then dir", testkit.Tar(t, testkit.File("a", "2"), testkit.Dir("a/")), Options{}, failure.InvalidLayer,
			`entry 2 "a/": duplicate path "a", already written by entry 1`},
		{"windows case-insensitive dup", testkit.Tar(t, testkit.File("A.txt", "1"), testkit.File("a.TXT", "2")), Options{Windows: true}, failure.InvalidLayer,
			`entry 2 "a.TXT": duplicate path "Files/a.TXT", already written by entry 1`},
		{"windows Files as file", testkit.Tar(t, testkit.File("Files", "1")), Options{Windows: true}, failure.InvalidLayer,
			`entry 1 "Files": Files must be a directory in a Windows layer`},
		{"root as file", testkit.Tar(t, testkit.File(".", "")), Options{}, failure.InvalidLayer,
			`entry 1 ".": the layer root must be a directory`},
		{"whiteout alone", testkit.Tar(t, testkit.File("a/.wh.", "")), Options{}, failure.InvalidLayer,
			`entry 1 "a/.wh.": whiteout names no file`},
		{"whiteout with content", testkit.Tar(t, testkit.File(".wh.x", "data")), Options{}, failure.InvalidLayer,
			`entry 1 ".wh.x": whiteout must be an empty regular file`},
		{"whiteout dir", testkit.Tar(t, testkit.Dir(".wh.x/")), Options{}, failure.InvalidLayer,
			`entry 1 ".wh.x/": whiteout must be an empty regular file`},
		{"whiteout symlink", testkit.Tar(t, testkit.Symlink(".wh.x", "y")), Options{}, failure.InvalidLayer,
			`entry 1 ".wh.x": whiteout must be an empty regular file`},
		{"opaque at root", testkit.Tar(t, testkit.File(".wh..wh..opq", "")), Options{}, failure.InvalidLayer,
			`entry 1 ".wh..wh..opq": opaque whiteout must be inside a directory`},
		{"opaque under file", testkit.Tar(t, testkit.File("a", "x"), testkit.File("a/.wh..wh..opq", "")), Options{}, failure.InvalidLayer,
			`entry 2 "a/.wh..wh..opq": parent "a" is not a directory (entry 1)`},
		{"aufs meta", testkit.Tar(t, testkit.File("a/.wh..wh.plnk", "")), Options{}, failure.InvalidLayer,
			`entry 1 "a/.wh..wh.plnk": unknown whiteout meta entry`},
		{"sparse", sparseTar(t), Options{}, failure.InvalidLayer,
			`entry 1 "sparse": sparse files are not supported`},
		{"global path", testkit.Tar(t, testkit.Entry{Name: "g", Type: tar.TypeXGlobalHeader, PAX: map[string]string{"path": "evil"}}, testkit.File("a", "")),
			Options{}, failure.InvalidLayer, `entry 1 "evil": global PAX header sets "path" for later entries`},
		{"not a tar", bytes.Repeat([]byte("hello world "), 100), Options{}, failure.InvalidLayer,
			`entry 1: invalid tar header`},
		{"empty", nil, Options{}, failure.InvalidLayer, `empty input: not a tar archive`},
		{"truncated body", testkit.Tar(t, testkit.File("a", strings.Repeat("x", 2000)))[:1024], Options{}, failure.InvalidLayer,
			`entry 1: truncated: the layer ends inside the entry's content`},
		{"truncated header", testkit.Tar(t, testkit.File("a", "x"), testkit.File("b", "y"))[:1024+100], Options{}, failure.InvalidLayer,
			`entry 2: truncated tar header`},
		{"max entries", testkit.Tar(t, testkit.File("a", ""), testkit.File("b", ""), testkit.File("c", "")), Options{Limits: Limits{MaxEntries: 2}},
			failure.LimitExceeded, `layer has more than 2 entries (limit MaxEntries)`},
		{"max entries with implied directories", testkit.Tar(t, testkit.File("a/b/c/d", ""), testkit.File("a/b/e", "")), Options{Limits: Limits{MaxEntries: 4}},
			failure.LimitExceeded, `layer has more than 4 entries, counting the 3 parent directories implied by entries (limit MaxEntries)`},
		{"max size", testkit.Tar(t, testkit.File("a", strings.Repeat("x", 5000))), Options{Limits: Limits{MaxUncompressedBytes: 4096}},
			failure.LimitExceeded, `uncompressed size exceeds 4096 bytes (limit MaxUncompressedBytes)`},
		{"max header", testkit.Tar(t, testkit.File(long, "")), Options{Limits: Limits{MaxHeaderBytes: 1024}},
			failure.LimitExceeded, `entry 1: header is larger than 1024 bytes (limit MaxHeaderBytes)`},
		{"pax bomb", paxBomb(t), Options{},
			failure.LimitExceeded, `entry 1: header is larger than 1048576 bytes (limit MaxHeaderBytes)`},
		{"ratio", testkit.Tar(t, testkit.File("a", strings.Repeat("\x00", 9<<20))), Options{CompressedBytes: func() int64 { return 1000 }},
			failure.LimitExceeded, `decompresses to more than 1000 times its compressed size`},
		{"layer name", testkit.Tar(t, testkit.File("../x", "")), Options{LayerName: "rootfs"}, failure.InvalidLayer,
			`layer "rootfs": entry 1 "../x": path escapes the layer root`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := normalize(t, tc.in, tc.opts)
			if err == nil {
				t.Fatalf("want error %q, got none", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
			if !failure.IsPermanent(err) || failure.ReasonOf(err) != tc.reason {
				t.Fatalf("error %q: want permanent %s, got %s", err, tc.reason, failure.ReasonOf(err))
			}
		})
	}
}

// paxBomb is a PAX extended header claiming 2 MiB of records.
func paxBomb(t *testing.T) []byte {
	b := testkit.Tar(t, testkit.Entry{Name: "PaxHeaders/a", Body: strings.Repeat("x", 2<<20)})
	b[156] = tar.TypeXHeader
	testkit.FixChecksum(b[:512])
	return b
}

// sparseTar is a GNU old-format sparse file made by hand: archive/tar
// cannot write one.
func sparseTar(t *testing.T) []byte {
	b := testkit.Tar(t, testkit.Entry{Name: "sparse", Body: "x", Format: tar.FormatGNU})
	b[156] = tar.TypeGNUSparse
	testkit.FixChecksum(b[:512])
	return b
}

func TestNormalizeNUL(t *testing.T) {
	// archive/tar cannot carry a NUL inside a name; the check is defensive,
	// so test the checker itself.
	if _, err := cleanPath("a\x00b", false); err == nil || err.Error() != "NUL byte in path" {
		t.Fatalf("got %v", err)
	}
}

func TestNormalizeAccepts(t *testing.T) {
	created := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name        string
		in          []byte
		opts        Options
		wantNames   []string
		wantChanged bool
		wantChanges map[string]int
	}{
		{"dot-dot inside", testkit.Tar(t, testkit.Dir("a/"), testkit.Dir("b/"), testkit.File("./a/../b/x", "1")), Options{},
			[]string{"a/", "b/", "./a/../b/x"}, false, nil},
		{"symlinks anywhere", testkit.Tar(t, testkit.Symlink("abs", "/etc/passwd"), testkit.Symlink("up", "../../..")), Options{},
			[]string{"abs", "up"}, false, nil},
		{"duplicate dirs merge, first kept", testkit.Tar(t, testkit.Dir("./a/"), testkit.File("a/x", "1"), testkit.Entry{Name: "a", Type: tar.TypeDir, Mode: 0o700}), Options{},
			[]string{"./a/", "a/x"}, true, map[string]int{ChangeMergedDirectories: 1}},
		{"root kept in minimal", testkit.Tar(t, testkit.Dir("./"), testkit.File("./a", "1")), Options{},
			[]string{"./", "./a"}, false, nil},
		{"root dropped in reproducible", testkit.Tar(t, testkit.Dir("./"), testkit.File("./a", "1")), Options{Mode: Reproducible, Created: testkit.Time},
			[]string{"a"}, true, map[string]int{ChangeDroppedRootEntries: 1, ChangeCleanedNames: 1, ChangeRewrittenHeaders: 1}},
		{"whiteouts", testkit.Tar(t, testkit.Dir("a/"), testkit.File("a/.wh.b", ""), testkit.File("a/.wh..wh..opq", ""), testkit.File(".wh.c", "")), Options{},
			[]string{"a/", "a/.wh.b", "a/.wh..wh..opq", ".wh.c"}, false, nil},
		{"explicit directories stop counting as implied", testkit.Tar(t, testkit.File("a/b/c", "1"), testkit.Dir("a/"), testkit.Dir("a/b/"), testkit.File("x", "")),
			Options{Limits: Limits{MaxEntries: 4}}, []string{"a/b/c", "a/", "a/b/", "x"}, false, nil},
		{"hardlink to earlier", testkit.Tar(t, testkit.File("./a", "1"), testkit.Hardlink("b", "a")), Options{},
			[]string{"./a", "b"}, false, nil},
		{"symlink size zeroed", testkit.Tar(t, testkit.Entry{Name: "l", Type: tar.TypeSymlink, Link: "x", Size: 5}), Options{},
			[]string{"l"}, true, map[string]int{ChangeHeaderOnlySize: 1, ChangeRewrittenHeaders: 1}},
		{"global header passes", testkit.Tar(t, testkit.Entry{Name: "pax_global_header", Type: tar.TypeXGlobalHeader, PAX: map[string]string{"comment": "git"}}, testkit.File("a", "1")), Options{},
			[]string{"pax_global_header", "a"}, false, nil},
		{"reproducible clamps and cleans", testkit.Tar(t, testkit.Entry{Name: "./a", Body: "1", Uname: "root",
			ModTime: time.Date(2030, 1, 1, 0, 0, 0, 5, time.UTC),
			PAX:     map[string]string{"SCHILY.xattr.security.capability": "cap", "LIBARCHIVE.creationtime": "1", "comment": "x"}, AccessTime: testkit.Time, Format: tar.FormatPAX}),
			Options{Mode: Reproducible, Created: created},
			[]string{"a"}, true, map[string]int{ChangeClampedMtimes: 1, ChangeClearedOwnerNames: 1, ChangeDroppedPAXRecords: 1,
				ChangeDroppedTimes: 1, ChangeCleanedNames: 1, ChangeRewrittenHeaders: 1}},
		{"reproducible keeps older mtime", testkit.Tar(t, testkit.Entry{Name: "a", ModTime: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)}),
			Options{Mode: Reproducible, Created: created},
			[]string{"a"}, false, nil}, // archive/tar's USTAR is already canonical
		{"reproducible drops global", testkit.Tar(t, testkit.Entry{Name: "g", Type: tar.TypeXGlobalHeader, PAX: map[string]string{"comment": "x"}}, testkit.File("a", "")),
			Options{Mode: Reproducible, Created: created},
			[]string{"a"}, true, map[string]int{ChangeDroppedGlobal: 1, ChangeClampedMtimes: 1, ChangeRewrittenHeaders: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, st, err := normalize(t, tc.in, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(listTar(t, out)); !reflect.DeepEqual(got, tc.wantNames) {
				t.Errorf("names %q, want %q", got, tc.wantNames)
			}
			if st.Changed != tc.wantChanged || st.Changed == bytes.Equal(out, tc.in) {
				t.Errorf("Changed %v, want %v (bytes equal: %v)", st.Changed, tc.wantChanged, bytes.Equal(out, tc.in))
			}
			if !reflect.DeepEqual(st.Changes, tc.wantChanges) {
				t.Errorf("Changes %v, want %v", st.Changes, tc.wantChanges)
			}
			assertIdempotent(t, out, tc.opts)
		})
	}
}

// assertIdempotent checks that normalizing an output again changes nothing.
func assertIdempotent(t *testing.T, out []byte, opts Options) {
	t.Helper()
	again, st, err := normalize(t, out, opts)
	if err != nil {
		t.Fatalf("normalizing the output again: %v", err)
	}
	if st.Changed || !bytes.Equal(again, out) {
		t.Fatalf("normalizing the output again changed it: %v", st.Changes)
	}
}

func TestReproducibleHeaders(t *testing.T) {
	created := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	in := testkit.Tar(t, testkit.Entry{Name: "./d", Type: tar.TypeDir, ModTime: created.Add(time.Hour), Uname: "u", Format: tar.FormatGNU},
		testkit.Entry{Name: "d/f", Body: "abc", Mode: 0o100755, ModTime: created.Add(-time.Hour)},
		testkit.Entry{Name: "d/cap", PAX: map[string]string{"SCHILY.xattr.security.capability": "\x01"}})
	out, _, err := normalize(t, in, Options{Mode: Reproducible, Created: created})
	if err != nil {
		t.Fatal(err)
	}
	hdrs := listTar(t, out)
	if hdrs[0].Name != "d/" || !hdrs[0].ModTime.Equal(created) || hdrs[0].Uname != "" || hdrs[0].Format != tar.FormatUSTAR {
		t.Errorf("dir header %+v", hdrs[0])
	}
	if hdrs[1].Mode != 0o755 || !hdrs[1].ModTime.Equal(created.Add(-time.Hour)) || hdrs[1].Format != tar.FormatUSTAR {
		t.Errorf("file header %+v", hdrs[1])
	}
	if hdrs[2].PAXRecords["SCHILY.xattr.security.capability"] != "\x01" || hdrs[2].Format != tar.FormatPAX {
		t.Errorf("xattr header %+v", hdrs[2])
	}
	if !bytes.Equal(out[len(out)-1024:], make([]byte, 1024)) || len(out)%512 != 0 {
		t.Error("output does not end with two zero blocks")
	}
}

func TestWindowsShaping(t *testing.T) {
	cases := []struct {
		name  string
		in    []byte
		opts  Options
		want  []string
		rawsd int
	}{
		{"plain tree from tar -C dir .", testkit.Tar(t, testkit.Dir("./"), testkit.File("./app.exe", "MZ"), testkit.Dir("./sub/"), testkit.File("./sub/x.dll", "MZ")),
			Options{Windows: true}, []string{"Files", "Hives", "Files/app.exe", "Files/sub", "Files/sub/x.dll"}, 5},
		{"shaped tree from tar -C dir .", testkit.Tar(t, testkit.Dir("./"), testkit.Dir("./Files/"), testkit.File("./Files/app.exe", "MZ"), testkit.Dir("./Hives/"), testkit.File("./Hives/SOFTWARE_BASE", "h")),
			Options{Windows: true}, []string{"Files", "Hives", "Files/app.exe", "Hives/SOFTWARE_BASE"}, 4},
		{"already shaped, not prefixed twice", testkit.Tar(t, testkit.Dir("Files"), testkit.Dir("Hives"), testkit.File("Files/a", "1")),
			Options{Windows: true}, []string{"Files", "Hives", "Files/a"}, 3},
		{"empty layer", testkit.Tar(t), Options{Windows: true}, []string{"Files", "Hives"}, 2},
		{"reproducible", testkit.Tar(t, testkit.Dir("./"), testkit.Dir("./a/"), testkit.File("./a/b", "1")),
			Options{Windows: true, Mode: Reproducible}, []string{"Files", "Hives", "Files/a", "Files/a/b"}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, st, err := normalize(t, tc.in, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			hdrs := listTar(t, out)
			if got := names(hdrs); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("names %q, want %q", got, tc.want)
			}
			rawsd := 0
			for _, h := range hdrs {
				if h.PAXRecords[paxRawSD] == WindowsRawSD {
					rawsd++
				}
			}
			if rawsd != tc.rawsd {
				t.Errorf("%d entries with rawsd, want %d", rawsd, tc.rawsd)
			}
			if !st.Changed {
				t.Error("Changed = false")
			}
			assertIdempotent(t, out, tc.opts)
		})
	}
}

// TestWindowsTarCDot is the report that started kiln: `tar -C dir .` of a
// Windows app appended with crane gave "duplicate file path: Files".
func TestWindowsTarCDot(t *testing.T) {
	for _, tree := range []map[string]string{
		{"Files/app.exe": "MZ", "Files/conf/": "", "Hives/": ""},
		{"app.exe": "MZ", "conf/app.ini": "x"},
	} {
		in := gnuTar(t, writeTree(t, tree), ".")
		out, _, err := normalize(t, in, Options{Windows: true})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, h := range listTar(t, out) {
			n := strings.TrimSuffix(h.Name, "/")
			if seen[n] {
				t.Fatalf("duplicate path %q in %q", n, names(listTar(t, out)))
			}
			seen[n] = true
			if n != "Files" && n != "Hives" && !strings.HasPrefix(n, "Files/") && !strings.HasPrefix(n, "Hives/") {
				t.Errorf("%q is outside Files/ and Hives/", n)
			}
		}
		if !seen["Files"] || !seen["Hives"] {
			t.Errorf("missing Files or Hives: %v", seen)
		}
	}
}

// TestMinimalBytePreserving: clean inputs from several writers come out
// byte for byte, so their compressed form can be pushed untouched.
func TestMinimalBytePreserving(t *testing.T) {
	tree := writeTree(t, map[string]string{"etc/passwd": "root:x:0:0", "bin/": "", "usr/share/doc/" + strings.Repeat("long", 40): "x",
		"app/big": strings.Repeat("0123456789", 10000)})
	inputs := map[string][]byte{
		"archive/tar": testkit.Tar(t, testkit.Dir("a/"), testkit.File("a/b", "hello"), testkit.Symlink("a/l", "/etc"), testkit.Hardlink("a/h", "a/b")),
		"archive/tar pax": testkit.Tar(t, testkit.Entry{Name: strings.Repeat("p", 150), Body: "x", PAX: map[string]string{"SCHILY.xattr.user.x": "1"}},
			testkit.Entry{Name: "t", ModTime: time.Date(2020, 1, 1, 0, 0, 0, 123, time.UTC), Format: tar.FormatPAX}),
		"gnu tar dot":   gnuTar(t, tree, "."),
		"gnu tar names": gnuTar(t, tree, "etc", "usr", "app", "bin"),
		"gnu tar pax":   gnuTar(t, tree, "--format=pax", "."),
		"gnu tar gnu":   gnuTar(t, tree, "--format=gnu", "."),
		"gnu tar ustar": gnuTar(t, tree, "--format=ustar", "etc", "bin", "app"),
		"empty archive": make([]byte, 1024),
		"gnu tar v7":    gnuTar(t, tree, "--format=v7", "etc"),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			out, st, err := normalize(t, in, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if st.Changed || !bytes.Equal(out, in) {
				t.Fatalf("output differs from input (Changed=%v, %v)", st.Changed, st.Changes)
			}
			if st.Size != int64(len(in)) {
				t.Errorf("size %d, want %d", st.Size, len(in))
			}
		})
	}
}

func TestTrailer(t *testing.T) {
	body := testkit.Tar(t, testkit.File("a", "1"))
	entries := body[:len(body)-1024]
	cases := []struct {
		name    string
		in      []byte
		mode    Mode
		changed bool
		outLen  int
	}{
		{"two zero blocks", body, Minimal, false, len(body)},
		{"no end marker", entries, Minimal, true, len(body)},
		{"one zero block", append(append([]byte{}, entries...), make([]byte, 512)...), Minimal, true, len(body)},
		{"gnu record padding kept", append(append([]byte{}, body...), make([]byte, 8192)...), Minimal, false, len(body) + 8192},
		{"junk after end dropped", append(append([]byte{}, body...), "junk"...), Minimal, true, len(body)},
		{"reproducible drops padding", append(append([]byte{}, body...), make([]byte, 8192)...), Reproducible, true, len(body)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, st, err := normalize(t, tc.in, Options{Mode: tc.mode, Created: testkit.Time})
			if err != nil {
				t.Fatal(err)
			}
			if st.Changed != tc.changed || len(out) != tc.outLen {
				t.Fatalf("Changed %v len %d, want %v %d", st.Changed, len(out), tc.changed, tc.outLen)
			}
			listTar(t, out)
		})
	}
}

func TestStopOnChange(t *testing.T) {
	in := testkit.Tar(t, testkit.File("a", "1"), testkit.Dir("d/"), testkit.Dir("d/"), testkit.File("b", strings.Repeat("x", 1<<20)))
	var out bytes.Buffer
	_, err := Normalize(&out, bytes.NewReader(in), Options{stopOnChange: true})
	if !errors.Is(err, errChanged) {
		t.Fatalf("got %v, want errChanged", err)
	}
	if out.Len() >= len(in)/2 {
		t.Errorf("read on after the first change: %d bytes out", out.Len())
	}
}

func TestSourceErrorKeepsClass(t *testing.T) {
	boom := failure.Retryable(errors.New("connection reset"), 0)
	in := testkit.Tar(t, testkit.File("a", strings.Repeat("x", 4096)))
	_, err := Normalize(io_Discard{}, &failingReader{data: in[:1000], err: boom}, Options{LayerName: "app"})
	if !errors.Is(err, boom) || failure.IsPermanent(err) {
		t.Fatalf("got %v, want the source error", err)
	}
	if want := `layer "app": reading the tar stream: connection reset`; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
}

type io_Discard struct{}

func (io_Discard) Write(p []byte) (int, error) { return len(p), nil }

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}
