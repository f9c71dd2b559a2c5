package layer

import (
	"archive/tar"
	"fmt"
	"strings"
	"testing"
)

func TestWhiteoutTargets(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{"whiteout of the directory", mkTar(t, dir("a/"), file("a/.wh..", "")), false,
			`entry 2 "a/.wh..": whiteout target "." is not a file name`},
		{"whiteout of the parent", mkTar(t, dir("a/"), file("a/.wh...", "")), false,
			`entry 2 "a/.wh...": whiteout target ".." is not a file name`},
		{"whiteout of the parent at the root", mkTar(t, file(".wh...", "")), false,
			`entry 1 ".wh...": whiteout target ".." is not a file name`},
		{"whiteout of nothing", mkTar(t, file(".wh.", "")), false,
			`entry 1 ".wh.": whiteout names no file`},
	})
	runAcceptCases(t, []acceptCase{
		{"opaque and dotted names", mkTar(t, dir("a/"), file("a/.wh..wh..opq", ""), file("a/.wh..x", ""), file("a/.wh....", "")), false},
	})
}

func TestEntryTypes(t *testing.T) {
	var cases []ruleCase
	for _, typ := range []byte{'Z', 'V', 'M', 'N', 'D', 'X', 'A', '8'} {
		cases = append(cases, ruleCase{"type " + string(typ), rawTar(blk{typ: typ, name: "x"}.bytes()), false,
			`entry 1 "x": unsupported entry type '` + string(typ) + `' (want a regular file, hardlink, symlink, character or block device, directory or fifo)`})
	}
	cases = append(cases, ruleCase{"GNU sparse", sparseTar(t), false, `entry 1 "sparse": sparse files are not supported`})
	runRuleCases(t, cases)
	runAcceptCases(t, []acceptCase{
		{"every supported type", rawTar(
			blk{typ: tar.TypeReg, name: "reg"}.bytes(), blk{typ: tar.TypeRegA, name: "rega"}.bytes(),
			blk{typ: tar.TypeCont, name: "cont"}.bytes(), blk{typ: tar.TypeLink, name: "hard", link: "reg"}.bytes(),
			blk{typ: tar.TypeSymlink, name: "sym", link: "reg"}.bytes(), blk{typ: tar.TypeChar, name: "chr"}.bytes(),
			blk{typ: tar.TypeBlock, name: "blk"}.bytes(), blk{typ: tar.TypeDir, name: "dir/"}.bytes(),
			blk{typ: tar.TypeFifo, name: "fifo"}.bytes()), false},
	})
}

// TestImplicitDirectories: the parent-must-be-a-directory rule holds in
// both orders.
func TestImplicitDirectories(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{"file replaces implicit directory", mkTar(t, file("a/b", "x"), file("a", "y")), false,
			`entry 2 "a": "a" is a directory (parent of entry 1) and cannot be replaced by a regular file`},
		{"symlink replaces implicit directory", mkTar(t, file("a/b/c", "x"), symlink("./a/b", "/etc")), false,
			`entry 2 "./a/b": "a/b" is a directory (parent of entry 1) and cannot be replaced by a symlink`},
		{"hardlink replaces implicit directory", mkTar(t, file("f", "x"), file("a/b", "x"), hardlink("a", "f")), false,
			`entry 3 "a": "a" is a directory (parent of entry 2) and cannot be replaced by a hardlink`},
		{"whiteout implies its directory", mkTar(t, file("a/.wh.b", ""), file("a", "")), false,
			`entry 2 "a": "a" is a directory (parent of entry 1) and cannot be replaced by a regular file`},
		{"windows, other case", mkTar(t, file("A/b", "x"), file("a", "y")), true,
			`entry 2 "a": "Files/a" is a directory (parent of entry 1) and cannot be replaced by a regular file`},
		{"hardlink to implicit directory", mkTar(t, file("a/b", "x"), hardlink("h", "a")), false,
			`entry 2 "h": hardlink target "a" is a directory`},
		{"explicit after implicit, then a file", mkTar(t, file("a/b", "x"), dir("a/"), file("a", "")), false,
			`entry 3 "a": duplicate path "a", already written by entry 2`},
	})
	runAcceptCases(t, []acceptCase{
		{"explicit directory after its content", mkTar(t, file("a/b/c", "x"), dir("a/b/"), dir("a/")), false},
		{"windows explicit directory after its content", mkTar(t, file("Files/A/b", "x"), dir("Files/a")), true},
	})
}

func TestNameLimits(t *testing.T) {
	seg := strings.Repeat("x", 200) + "/"
	long := strings.Repeat(seg, 20) + strings.Repeat("y", 100) // 4120 bytes
	atLimit := strings.Repeat(seg, 20) + strings.Repeat("y", 76)
	c256, c255 := strings.Repeat("c", 256), strings.Repeat("c", 255)
	runRuleCases(t, []ruleCase{
		{"path too long", mkTar(t, file(long, "")), false,
			`entry 1 "` + long[:256] + `...": path is 4120 bytes, longer than 4096 (PATH_MAX)`},
		{"component too long", mkTar(t, file("d/"+c256, "")), false,
			`entry 1 "d/` + c256[:254] + `...": path component "` + c256[:40] + `..." is 256 bytes, longer than 255 (NAME_MAX)`},
		{"hardlink target too long", mkTar(t, hardlink("h", long)), false,
			`entry 1 "h": hardlink target "` + long[:256] + `...": path is 4120 bytes, longer than 4096 (PATH_MAX)`},
		{"hardlink target component", mkTar(t, hardlink("h", c256)), false,
			`entry 1 "h": hardlink target "` + c256[:256] + `": path component "` + c256[:40] + `..." is 256 bytes, longer than 255 (NAME_MAX)`},
		{"symlink target too long", mkTar(t, symlink("s", "/"+long)), false,
			`entry 1 "s": symlink target is 4121 bytes, longer than 4096 (PATH_MAX)`},
		{"cleaned path counts", mkTar(t, dir("./"+long+"/")), false,
			`entry 1 "./` + long[:254] + `...": path is 4120 bytes, longer than 4096 (PATH_MAX)`},
	})
	runAcceptCases(t, []acceptCase{
		{"at the limits", mkTar(t, file(atLimit, ""), file(c255, ""), symlink("s", strings.Repeat("z", 4096)),
			symlink("s2", "/"+c256)), false},
	})
}

func TestWindowsNames(t *testing.T) {
	cases := []ruleCase{
		{"drive letter", mkTar(t, file(`C:\Windows\System32\evil.dll`, "MZ")), true,
			`entry 1 "C:\\Windows\\System32\\evil.dll": drive letter "C:" in path; entries must be relative to the layer root`},
		{"drive-relative", mkTar(t, file(`d:evil.dll`, "MZ")), true,
			`entry 1 "d:evil.dll": drive letter "d:" in path`},
		{"alternate data stream", mkTar(t, file("readme.txt:evil.exe", "MZ")), true,
			`entry 1 "readme.txt:evil.exe": character ':' in path component "readme.txt:evil.exe" is not allowed in a Windows file name`},
		{"control character", mkTar(t, file("a\x01b", "")), true,
			`entry 1 "a\x01b": control character '\x01' in path component "a\x01b" is not allowed in a Windows file name`},
		{"trailing dot", mkTar(t, file("a.txt", ""), file("a.txt.", "")), true,
			`entry 2 "a.txt.": path component "a.txt." ends with '.', which Windows strips`},
		{"trailing space", mkTar(t, file("dir /a", "")), true,
			`entry 1 "dir /a": path component "dir " ends with ' ', which Windows strips`},
		{"hardlink target", mkTar(t, file("a", ""), hardlink("h", "ab:c")), true,
			`entry 2 "h": hardlink target "ab:c": character ':' in path component "ab:c"`},
		{"hardlink target drive", mkTar(t, file("a", ""), hardlink("h", "a:b")), true,
			`entry 2 "h": hardlink target "a:b": drive letter "a:" in path`},
	}
	for _, c := range []byte(`*?<>|"`) {
		name := "a" + string(c) + "b"
		cases = append(cases, ruleCase{"character " + string(c), mkTar(t, file("d/"+name, "")), true,
			fmt.Sprintf(`entry 1 %q: character %q in path component %q is not allowed in a Windows file name`, "d/"+name, c, name)})
	}
	for _, name := range []string{"CON", "prn.txt", "Aux.tar.gz", "nul", "COM1", "com9.log", "LPT1", "lpt3.x", "CONIN$", "conout$", "COM¹", "NUL .txt"} {
		cases = append(cases, ruleCase{"reserved " + name, mkTar(t, file("dir/"+name, "")), true,
			`entry 1 "dir/` + name + `": path component "` + name + `" is a reserved Windows device name`})
	}
	runRuleCases(t, cases)
	runAcceptCases(t, []acceptCase{
		{"not reserved", mkTar(t, file("CONSOLE", ""), file("COM0", ""), file("com10", ""), file("LPT", ""), file("nul_x", ""),
			file(".config", ""), file("a b", "")), true},
		{"linux layers may use them", mkTar(t, file("readme.txt:evil.exe", ""), file("CON", ""), file("a.", ""), file("q?", "")), false},
	})
}
