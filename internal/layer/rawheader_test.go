package layer

import (
	"archive/tar"
	"github.com/kiln-build/kiln/internal/testkit"
	"strings"
	"testing"
)

// TestParserDifferentials: every name a mainstream reader can derive from
// the raw header bytes must be the one kiln checked (see rawheader.go).
func TestParserDifferentials(t *testing.T) {
	reg := func(name string) []byte { return testkit.Block{Type: tar.TypeReg, Name: name}.Bytes() }
	runRuleCases(t, []ruleCase{
		{"PAX path and GNU long name", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "benign")), testkit.Meta('L', "../../x\x00"), reg("benign")), false,
			`entry 1 "../../x": PAX path "benign" and GNU long name "../../x" disagree (readers differ on which one applies)`},
		{"GNU long name then PAX path", testkit.RawTar(testkit.Meta('L', "evil\x00"), testkit.Meta('x', testkit.PAXRecord("path", "benign")), reg("x")), false,
			`entry 1 "evil": PAX path "benign" and GNU long name "evil" disagree`},
		{"PAX linkpath and GNU long link", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("linkpath", "/ok")), testkit.Meta('K', "/etc/shadow\x00"),
			testkit.Block{Type: tar.TypeSymlink, Name: "l", Link: "ok"}.Bytes()), false,
			`entry 1 "l": PAX linkpath "/ok" and GNU long link "/etc/shadow" disagree`},
		{"two PAX headers", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "../x")), testkit.Meta('x', testkit.PAXRecord("path", "a")), reg("a")), false,
			`entry 1 "a": more than one PAX extended header ('x') before one entry (readers differ on which one applies)`},
		{"two long names", testkit.RawTar(testkit.Meta('L', "../x\x00"), testkit.Meta('L', "a\x00"), reg("a")), false,
			`entry 1 "a": more than one GNU long name header ('L') before one entry`},
		{"two long links", testkit.RawTar(testkit.Meta('K', "../x\x00"), testkit.Meta('K', "b\x00"), testkit.Block{Type: tar.TypeSymlink, Name: "a"}.Bytes()), false,
			`entry 1 "a": more than one GNU long link header ('K') before one entry`},
		{"PAX header before global", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "../../x")), testkit.Meta('g', testkit.PAXRecord("comment", "c")), reg("a")), false,
			`entry 1 "././@meta": PAX extended header ('x') before a global PAX header (readers differ on which entry it applies to)`},
		{"long name before global", testkit.RawTar(testkit.Meta('L', "../../x\x00"), testkit.Meta('g', testkit.PAXRecord("comment", "c")), reg("a")), false,
			`entry 1 "././@meta": GNU long name header ('L') before a global PAX header`},
		{"NUL inside long name", testkit.RawTar(testkit.Meta('L', "benign\x00../../x\x00"), reg("x")), false,
			`entry 1 "benign": NUL byte inside the GNU long name (readers truncate it differently)`},
		{"NUL inside long link", testkit.RawTar(testkit.Meta('K', "ok\x00/etc\x00"), testkit.Block{Type: tar.TypeSymlink, Name: "l"}.Bytes()), false,
			`entry 1 "l": NUL byte inside the GNU long link`},
		{"empty long name", testkit.RawTar(testkit.Meta('L', "\x00"), reg("a")), false,
			`entry 1 "a": empty GNU long name (archive/tar ignores it, Python's tarfile applies it)`},
		{"empty PAX path", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "")), reg("a")), false,
			`entry 1 "a": empty PAX "path" record (archive/tar ignores it, Python's tarfile applies it)`},
		{"empty PAX size", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("size", "")), reg("a")), false,
			`entry 1 "a": empty PAX "size" record`},
		{"signed PAX length", testkit.RawTar(testkit.Meta('x', "+14 path=evil\n"), reg("a")), false,
			`entry 1 "evil": malformed PAX record "+14 path=evil\n"`},
		{"repeated PAX record", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "../x")+testkit.PAXRecord("path", "a")), reg("a")), false,
			`entry 1 "a": PAX header repeats the "path" record (readers differ on which one applies)`},
		{"NUL in PAX path", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "a\x00b")), reg("a")), false,
			`entry 1: invalid tar header`}, // archive/tar refuses it itself
		{"GNU header times read as prefix", testkit.RawTar(testkit.Block{Type: tar.TypeReg, Name: "d/f", Magic: testkit.MagicGNU,
			Patch: map[int]string{345: "15303732233\x00"}}.Bytes()), false,
			`entry 1 "d/f": the prefix field of this non-ustar header holds "15303732233" (Python's tarfile reads it as part of the name, other readers do not)`},
		{"GNU header binary times", testkit.RawTar(testkit.Block{Type: tar.TypeReg, Name: "x", Magic: testkit.MagicGNU,
			Patch: map[int]string{345: "\x80/../../..\x00"}}.Bytes()), false,
			`entry 1 "x": the prefix field of this non-ustar header holds "\x80/../../.."`},
		{"v7 header with prefix bytes", testkit.RawTar(testkit.Block{Type: tar.TypeReg, Name: "x", Magic: testkit.MagicV7,
			Patch: map[int]string{345: "../.."}}.Bytes()), false,
			`entry 1 "x": the prefix field of this non-ustar header holds "../.."`},
		{"star header with prefix", testkit.RawTar(testkit.Block{Type: tar.TypeReg, Name: "x",
			Patch: map[int]string{345: "d", 508: "tar\x00"}}.Bytes()), false,
			`entry 1 "d/x": the prefix field of this non-ustar header holds "d"`},
		{"old-style type directory by PAX path", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "d/")), testkit.Block{Type: tar.TypeRegA, Name: "d"}.Bytes()), false,
			`entry 1 "d/": old-style type '\x00' entry: its name field "d" and its full name disagree on the trailing "/" that makes it a directory`},
		{"old-style type file by PAX path", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "f")), testkit.Block{Type: tar.TypeRegA, Name: "f/"}.Bytes()), false,
			`entry 1 "f": old-style type '\x00' entry: its name field "f/"`},
		{"global size", testkit.Tar(t, testkit.Entry{Name: "g", Type: tar.TypeXGlobalHeader, PAX: map[string]string{"size": "1024"}}, testkit.File("a", "")), false,
			`entry 1 "g": global PAX header sets "size" for later entries`},
		{"global uid", testkit.Tar(t, testkit.Entry{Name: "g", Type: tar.TypeXGlobalHeader, PAX: map[string]string{"uid": "0"}}, testkit.File("a", "")), false,
			`entry 1 "g": global PAX header sets "uid" for later entries`},
		{"global sparse", testkit.Tar(t, testkit.Entry{Name: "g", Type: tar.TypeXGlobalHeader, PAX: map[string]string{"GNU.sparse.name": "x"}}, testkit.File("a", "")), false,
			`entry 1 "g": global PAX header sets "GNU.sparse.name" for later entries`},
	})
}

func TestParserDifferentialsAccepted(t *testing.T) {
	runAcceptCases(t, []acceptCase{
		{"PAX path and GNU long name agree", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "a/b")), testkit.Meta('L', "a/b\x00"), testkit.Block{Type: tar.TypeReg, Name: "x"}.Bytes()), false},
		{"junk after NUL in name field", testkit.RawTar(testkit.Block{Type: tar.TypeReg, Name: "a\x00junk/../../x", Link: "\x00junk"}.Bytes()), false},
		{"ustar prefix", testkit.RawTar(testkit.Block{Type: tar.TypeDir, Name: "d/"}.Bytes(), testkit.Block{Type: tar.TypeReg, Name: "f", Patch: map[int]string{345: "d"}}.Bytes()), false},
		{"GNU header without times", testkit.RawTar(testkit.Block{Type: tar.TypeReg, Name: "f", Magic: testkit.MagicGNU}.Bytes()), false},
		{"long PAX name over a truncated ustar name", testkit.Tar(t, testkit.File(strings.Repeat("n", 150)+"/"+strings.Repeat("m", 150), "x")), false},
		{"old-style type directory", testkit.RawTar(testkit.Block{Type: tar.TypeRegA, Name: "d/"}.Bytes(), testkit.Block{Type: tar.TypeRegA, Name: "d/f"}.Bytes()), false},
		{"global comment", testkit.Tar(t, testkit.Entry{Name: "pax_global_header", Type: tar.TypeXGlobalHeader, PAX: map[string]string{"comment": "git"}}, testkit.File("a", "")), false},
	})
}
