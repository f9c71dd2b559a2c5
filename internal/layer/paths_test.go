package layer

import (
	"archive/tar"
	"fmt"
	"github.com/kiln-build/kiln/internal/testkit"
	"strings"
	"testing"
)

func TestWhiteoutTargets(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{"whiteout of the directory", testkit.Tar(t, testkit.Dir("a/"), testkit.File("a/.wh..", "")), false,
			`entry 2 "a/.wh..": whiteout target "." is not a file name`},
		{"whiteout of the parent", testkit.Tar(t, testkit.Dir("a/"), testkit.File("a/.wh...", "")), false,
			`entry 2 "a/.wh...": whiteout target ".." is not a file name`},
		{"whiteout of the parent at the root", testkit.Tar(t, testkit.File(".wh...", "")), false,
			`entry 1 ".wh...": whiteout target ".." is not a file name`},
		{"whiteout of nothing", testkit.Tar(t, testkit.File(".wh.", "")), false,
			`entry 1 ".wh.": whiteout names no file`},
	})
	runAcceptCases(t, []acceptCase{
		{"opaque and dotted names", testkit.Tar(t, testkit.Dir("a/"), testkit.File("a/.wh..wh..opq", ""), testkit.File("a/.wh..x", ""), testkit.File("a/.wh....", "")), false},
	})
}

func TestEntryTypes(t *testing.T) {
	var cases []ruleCase
	for _, typ := range []byte{'Z', 'V', 'M', 'N', 'D', 'X', 'A', '8'} {
		cases = append(cases, ruleCase{"type " + string(typ), testkit.RawTar(testkit.Block{Type: typ, Name: "x"}.Bytes()), false,
			`entry 1 "x": unsupported entry type '` + string(typ) + `' (want a regular file, hardlink, symlink, character or block device, directory or fifo)`})
	}
	cases = append(cases, ruleCase{"GNU sparse", sparseTar(t), false, `entry 1 "sparse": sparse files are not supported`})
	runRuleCases(t, cases)
	runAcceptCases(t, []acceptCase{
		{"every supported type", testkit.RawTar(
			testkit.Block{Type: tar.TypeReg, Name: "reg"}.Bytes(), testkit.Block{Type: tar.TypeRegA, Name: "rega"}.Bytes(),
			testkit.Block{Type: tar.TypeCont, Name: "cont"}.Bytes(), testkit.Block{Type: tar.TypeLink, Name: "hard", Link: "reg"}.Bytes(),
			testkit.Block{Type: tar.TypeSymlink, Name: "sym", Link: "reg"}.Bytes(), testkit.Block{Type: tar.TypeChar, Name: "chr"}.Bytes(),
			testkit.Block{Type: tar.TypeBlock, Name: "blk"}.Bytes(), testkit.Block{Type: tar.TypeDir, Name: "dir/"}.Bytes(),
			testkit.Block{Type: tar.TypeFifo, Name: "fifo"}.Bytes()), false},
	})
}

// TestImplicitDirectories: the parent-must-be-a-directory rule holds in
// both orders.
func TestImplicitDirectories(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{"file replaces implicit directory", testkit.Tar(t, testkit.File("a/b", "x"), testkit.File("a", "y")), false,
			`entry 2 "a": "a" is a directory (parent of entry 1) and cannot be replaced by a regular file`},
		{"symlink replaces implicit directory", testkit.Tar(t, testkit.File("a/b/c", "x"), testkit.Symlink("./a/b", "/etc")), false,
			`entry 2 "./a/b": "a/b" is a directory (parent of entry 1) and cannot be replaced by a symlink`},
		{"hardlink replaces implicit directory", testkit.Tar(t, testkit.File("f", "x"), testkit.File("a/b", "x"), testkit.Hardlink("a", "f")), false,
			`entry 3 "a": "a" is a directory (parent of entry 2) and cannot be replaced by a hardlink`},
		{"whiteout implies its directory", testkit.Tar(t, testkit.File("a/.wh.b", ""), testkit.File("a", "")), false,
			`entry 2 "a": "a" is a directory (parent of entry 1) and cannot be replaced by a regular file`},
		{"windows, other case", testkit.Tar(t, testkit.File("A/b", "x"), testkit.File("a", "y")), true,
			`entry 2 "a": "Files/a" is a directory (parent of entry 1) and cannot be replaced by a regular file`},
		{"hardlink to implicit directory", testkit.Tar(t, testkit.File("a/b", "x"), testkit.Hardlink("h", "a")), false,
			`entry 2 "h": hardlink target "a" is a directory`},
		{"explicit after implicit, then a file", testkit.Tar(t, testkit.File("a/b", "x"), testkit.Dir("a/"), testkit.File("a", "")), false,
			`entry 3 "a": duplicate path "a", already written by entry 2`},
	})
	runAcceptCases(t, []acceptCase{
		{"explicit directory after its content", testkit.Tar(t, testkit.File("a/b/c", "x"), testkit.Dir("a/b/"), testkit.Dir("a/")), false},
		{"windows explicit directory after its content", testkit.Tar(t, testkit.File("Files/A/b", "x"), testkit.Dir("Files/a")), true},
	})
}

func TestNameLimits(t *testing.T) {
	seg := strings.Repeat("x", 200) + "/"
	long := strings.Repeat(seg, 20) + strings.Repeat("y", 100) // 4120 bytes
	atLimit := strings.Repeat(seg, 20) + strings.Repeat("y", 76)
	c256, c255 := strings.Repeat("c", 256), strings.Repeat("c", 255)
	runRuleCases(t, []ruleCase{
		{"path too long", testkit.Tar(t, testkit.File(long, "")), false,
			`entry 1 "` + long[:256] + `...": path is 4120 bytes, longer than 4096 (PATH_MAX)`},
		{"component too long", testkit.Tar(t, testkit.File("d/"+c256, "")), false,
			`entry 1 "d/` + c256[:254] + `...": path component "` + c256[:40] + `..." is 256 bytes, longer than 255 (NAME_MAX)`},
		{"hardlink target too long", testkit.Tar(t, testkit.Hardlink("h", long)), false,
			`entry 1 "h": hardlink target "` + long[:256] + `...": path is 4120 bytes, longer than 4096 (PATH_MAX)`},
		{"hardlink target component", testkit.Tar(t, testkit.Hardlink("h", c256)), false,
			`entry 1 "h": hardlink target "` + c256[:256] + `": path component "` + c256[:40] + `..." is 256 bytes, longer than 255 (NAME_MAX)`},
		{"symlink target too long", testkit.Tar(t, testkit.Symlink("s", "/"+long)), false,
			`entry 1 "s": symlink target is 4121 bytes, longer than 4096 (PATH_MAX)`},
		{"cleaned path counts", testkit.Tar(t, testkit.Dir("./"+long+"/")), false,
			`entry 1 "./` + long[:254] + `...": path is 4120 bytes, longer than 4096 (PATH_MAX)`},
	})
	runAcceptCases(t, []acceptCase{
		{"at the limits", testkit.Tar(t, testkit.File(atLimit, ""), testkit.File(c255, ""), testkit.Symlink("s", strings.Repeat("z", 4096)),
			testkit.Symlink("s2", "/"+c256)), false},
	})
}

func TestWindowsNames(t *testing.T) {
	cases := []ruleCase{
		{"drive letter", testkit.Tar(t, testkit.File(`C:\Windows\System32\evil.dll`, "MZ")), true,
			`entry 1 "C:\\Windows\\System32\\evil.dll": drive letter "C:" in path; entries must be relative to the layer root`},
		{"drive-relative", testkit.Tar(t, testkit.File(`d:evil.dll`, "MZ")), true,
			`entry 1 "d:evil.dll": drive letter "d:" in path`},
		{"alternate data stream", testkit.Tar(t, testkit.File("readme.txt:evil.exe", "MZ")), true,
			`entry 1 "readme.txt:evil.exe": character ':' in path component "readme.txt:evil.exe" is not allowed in a Windows file name`},
		{"control character", testkit.Tar(t, testkit.File("a\x01b", "")), true,
			`entry 1 "a\x01b": control character '\x01' in path component "a\x01b" is not allowed in a Windows file name`},
		{"trailing dot", testkit.Tar(t, testkit.File("a.txt", ""), testkit.File("a.txt.", "")), true,
			`entry 2 "a.txt.": path component "a.txt." ends with '.', which Windows strips`},
		{"trailing space", testkit.Tar(t, testkit.File("dir /a", "")), true,
			`entry 1 "dir /a": path component "dir " ends with ' ', which Windows strips`},
		{"hardlink target", testkit.Tar(t, testkit.File("a", ""), testkit.Hardlink("h", "ab:c")), true,
			`entry 2 "h": hardlink target "ab:c": character ':' in path component "ab:c"`},
		{"hardlink target drive", testkit.Tar(t, testkit.File("a", ""), testkit.Hardlink("h", "a:b")), true,
			`entry 2 "h": hardlink target "a:b": drive letter "a:" in path`},
	}
	for _, c := range []byte(`*?<>|"`) {
		name := "a" + string(c) + "b"
		cases = append(cases, ruleCase{"character " + string(c), testkit.Tar(t, testkit.File("d/"+name, "")), true,
			fmt.Sprintf(`entry 1 %q: character %q in path component %q is not allowed in a Windows file name`, "d/"+name, c, name)})
	}
	for _, name := range []string{"CON", "prn.txt", "Aux.tar.gz", "nul", "COM1", "com9.log", "LPT1", "lpt3.x", "CONIN$", "conout$", "COM¹", "NUL .txt"} {
		cases = append(cases, ruleCase{"reserved " + name, testkit.Tar(t, testkit.File("dir/"+name, "")), true,
			`entry 1 "dir/` + name + `": path component "` + name + `" is a reserved Windows device name`})
	}
	runRuleCases(t, cases)
	runAcceptCases(t, []acceptCase{
		{"not reserved", testkit.Tar(t, testkit.File("CONSOLE", ""), testkit.File("COM0", ""), testkit.File("com10", ""), testkit.File("LPT", ""), testkit.File("nul_x", ""),
			testkit.File(".config", ""), testkit.File("a b", "")), true},
		{"linux layers may use them", testkit.Tar(t, testkit.File("readme.txt:evil.exe", ""), testkit.File("CON", ""), testkit.File("a.", ""), testkit.File("q?", "")), false},
	})
}
