package layer

import (
	"archive/tar"
	"strings"
	"testing"
)

// TestParserDifferentials: every name a mainstream reader can derive from
// the raw header bytes must be the one kiln checked (see rawheader.go).
func TestParserDifferentials(t *testing.T) {
	reg := func(name string) []byte { return blk{typ: tar.TypeReg, name: name}.bytes() }
	runRuleCases(t, []ruleCase{
		{"PAX path and GNU long name", rawTar(meta('x', paxRec("path", "benign")), meta('L', "../../x\x00"), reg("benign")), false,
			`entry 1 "../../x": PAX path "benign" and GNU long name "../../x" disagree (readers differ on which one applies)`},
		{"GNU long name then PAX path", rawTar(meta('L', "evil\x00"), meta('x', paxRec("path", "benign")), reg("x")), false,
			`entry 1 "evil": PAX path "benign" and GNU long name "evil" disagree`},
		{"PAX linkpath and GNU long link", rawTar(meta('x', paxRec("linkpath", "/ok")), meta('K', "/etc/shadow\x00"),
			blk{typ: tar.TypeSymlink, name: "l", link: "ok"}.bytes()), false,
			`entry 1 "l": PAX linkpath "/ok" and GNU long link "/etc/shadow" disagree`},
		{"two PAX headers", rawTar(meta('x', paxRec("path", "../x")), meta('x', paxRec("path", "a")), reg("a")), false,
			`entry 1 "a": more than one PAX extended header ('x') before one entry (readers differ on which one applies)`},
		{"two long names", rawTar(meta('L', "../x\x00"), meta('L', "a\x00"), reg("a")), false,
			`entry 1 "a": more than one GNU long name header ('L') before one entry`},
		{"two long links", rawTar(meta('K', "../x\x00"), meta('K', "b\x00"), blk{typ: tar.TypeSymlink, name: "a"}.bytes()), false,
			`entry 1 "a": more than one GNU long link header ('K') before one entry`},
		{"PAX header before global", rawTar(meta('x', paxRec("path", "../../x")), meta('g', paxRec("comment", "c")), reg("a")), false,
			`entry 1 "././@meta": PAX extended header ('x') before a global PAX header (readers differ on which entry it applies to)`},
		{"long name before global", rawTar(meta('L', "../../x\x00"), meta('g', paxRec("comment", "c")), reg("a")), false,
			`entry 1 "././@meta": GNU long name header ('L') before a global PAX header`},
		{"NUL inside long name", rawTar(meta('L', "benign\x00../../x\x00"), reg("x")), false,
			`entry 1 "benign": NUL byte inside the GNU long name (readers truncate it differently)`},
		{"NUL inside long link", rawTar(meta('K', "ok\x00/etc\x00"), blk{typ: tar.TypeSymlink, name: "l"}.bytes()), false,
			`entry 1 "l": NUL byte inside the GNU long link`},
		{"empty long name", rawTar(meta('L', "\x00"), reg("a")), false,
			`entry 1 "a": empty GNU long name (archive/tar ignores it, Python's tarfile applies it)`},
		{"empty PAX path", rawTar(meta('x', paxRec("path", "")), reg("a")), false,
			`entry 1 "a": empty PAX "path" record (archive/tar ignores it, Python's tarfile applies it)`},
		{"empty PAX size", rawTar(meta('x', paxRec("size", "")), reg("a")), false,
			`entry 1 "a": empty PAX "size" record`},
		{"signed PAX length", rawTar(meta('x', "+14 path=evil\n"), reg("a")), false,
			`entry 1 "evil": malformed PAX record "+14 path=evil\n"`},
		{"repeated PAX record", rawTar(meta('x', paxRec("path", "../x")+paxRec("path", "a")), reg("a")), false,
			`entry 1 "a": PAX header repeats the "path" record (readers differ on which one applies)`},
		{"NUL in PAX path", rawTar(meta('x', paxRec("path", "a\x00b")), reg("a")), false,
			`entry 1: invalid tar header`}, // archive/tar refuses it itself
		{"GNU header times read as prefix", rawTar(blk{typ: tar.TypeReg, name: "d/f", magic: magicGNU,
			patch: map[int]string{345: "15303732233\x00"}}.bytes()), false,
			`entry 1 "d/f": the prefix field of this non-ustar header holds "15303732233" (Python's tarfile reads it as part of the name, other readers do not)`},
		{"GNU header binary times", rawTar(blk{typ: tar.TypeReg, name: "x", magic: magicGNU,
			patch: map[int]string{345: "\x80/../../..\x00"}}.bytes()), false,
			`entry 1 "x": the prefix field of this non-ustar header holds "\x80/../../.."`},
		{"v7 header with prefix bytes", rawTar(blk{typ: tar.TypeReg, name: "x", magic: magicV7,
			patch: map[int]string{345: "../.."}}.bytes()), false,
			`entry 1 "x": the prefix field of this non-ustar header holds "../.."`},
		{"star header with prefix", rawTar(blk{typ: tar.TypeReg, name: "x",
			patch: map[int]string{345: "d", 508: "tar\x00"}}.bytes()), false,
			`entry 1 "d/x": the prefix field of this non-ustar header holds "d"`},
		{"old-style type directory by PAX path", rawTar(meta('x', paxRec("path", "d/")), blk{typ: tar.TypeRegA, name: "d"}.bytes()), false,
			`entry 1 "d/": old-style type '\x00' entry: its name field "d" and its full name disagree on the trailing "/" that makes it a directory`},
		{"old-style type file by PAX path", rawTar(meta('x', paxRec("path", "f")), blk{typ: tar.TypeRegA, name: "f/"}.bytes()), false,
			`entry 1 "f": old-style type '\x00' entry: its name field "f/"`},
		{"global size", mkTar(t, ent{name: "g", typ: tar.TypeXGlobalHeader, pax: map[string]string{"size": "1024"}}, file("a", "")), false,
			`entry 1 "g": global PAX header sets "size" for later entries`},
		{"global uid", mkTar(t, ent{name: "g", typ: tar.TypeXGlobalHeader, pax: map[string]string{"uid": "0"}}, file("a", "")), false,
			`entry 1 "g": global PAX header sets "uid" for later entries`},
		{"global sparse", mkTar(t, ent{name: "g", typ: tar.TypeXGlobalHeader, pax: map[string]string{"GNU.sparse.name": "x"}}, file("a", "")), false,
			`entry 1 "g": global PAX header sets "GNU.sparse.name" for later entries`},
	})
}

func TestParserDifferentialsAccepted(t *testing.T) {
	runAcceptCases(t, []acceptCase{
		{"PAX path and GNU long name agree", rawTar(meta('x', paxRec("path", "a/b")), meta('L', "a/b\x00"), blk{typ: tar.TypeReg, name: "x"}.bytes()), false},
		{"junk after NUL in name field", rawTar(blk{typ: tar.TypeReg, name: "a\x00junk/../../x", link: "\x00junk"}.bytes()), false},
		{"ustar prefix", rawTar(blk{typ: tar.TypeDir, name: "d/"}.bytes(), blk{typ: tar.TypeReg, name: "f", patch: map[int]string{345: "d"}}.bytes()), false},
		{"GNU header without times", rawTar(blk{typ: tar.TypeReg, name: "f", magic: magicGNU}.bytes()), false},
		{"long PAX name over a truncated ustar name", mkTar(t, file(strings.Repeat("n", 150)+"/"+strings.Repeat("m", 150), "x")), false},
		{"old-style type directory", rawTar(blk{typ: tar.TypeRegA, name: "d/"}.bytes(), blk{typ: tar.TypeRegA, name: "d/f"}.bytes()), false},
		{"global comment", mkTar(t, ent{name: "pax_global_header", typ: tar.TypeXGlobalHeader, pax: map[string]string{"comment": "git"}}, file("a", "")), false},
	})
}
