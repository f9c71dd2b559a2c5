//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testkit"
)

// pseudoText is deterministic, compressible-but-not-trivially bytes: words
// from a small vocabulary with random-ish numbers, like logs or source code.
func pseudoText(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))
	words := []string{"kiln ", "layer ", "digest ", "sha256 ", "tar ", "image ", "registry ", "push\n", "{\"a\": ", "}, ", "func ", "return ", "err\n"}
	b := make([]byte, 0, size+64)
	for len(b) < size {
		b = append(b, words[rng.IntN(len(words))]...)
		if rng.IntN(4) == 0 {
			b = fmt.Appendf(b, "%d ", rng.Uint32())
		}
	}
	return b[:size]
}

// noise is deterministic incompressible bytes.
func noise(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, ^seed))
	b := make([]byte, size)
	for i := 0; i+8 <= size; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// node is what a rootfs holds at one path, as umoci unpacks it.
type node struct {
	Type   string // dir, file, symlink
	Mode   os.FileMode
	Target string // symlink target
	SHA256 string // file content
	Size   int64
}

func (n node) String() string {
	switch n.Type {
	case "symlink":
		return fmt.Sprintf("symlink -> %s", n.Target)
	case "file":
		return fmt.Sprintf("file %#o %d bytes sha256:%.12s", n.Mode, n.Size, n.SHA256)
	}
	return fmt.Sprintf("%s %#o", n.Type, n.Mode)
}

// tree maps a clean relative path ("bin/sh") to its node.
type tree map[string]node

// cleanName is the rootfs path a tar entry name stands for ("" is the root).
func cleanName(name string) string {
	p := path.Clean("/" + name)
	return strings.TrimPrefix(p, "/")
}

// apply adds one layer's entries to t the way an OCI unpacker does: later
// entries replace earlier ones, whiteouts remove, hardlinks copy the target.
// It fails the test on any entry it does not expect a valid layer to hold,
// so fixtures cannot silently drift from what the expected tree says.
func (t tree) apply(tb testing.TB, layerTar []byte) {
	tb.Helper()
	tr := tar.NewReader(bytes.NewReader(layerTar))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			tb.Fatalf("reading fixture tar: %v", err)
		}
		p := cleanName(hdr.Name)
		if p == "" {
			continue // the root entry of `tar -C dir .`
		}
		dir, base := path.Split(p)
		if base == ".wh..wh..opq" {
			t.removeUnder(strings.TrimSuffix(dir, "/"))
			continue
		}
		if strings.HasPrefix(base, ".wh.") {
			victim := dir + strings.TrimPrefix(base, ".wh.")
			delete(t, victim)
			t.removeUnder(victim)
			continue
		}
		mode := os.FileMode(hdr.Mode) & os.ModePerm
		if hdr.Mode&0o4000 != 0 {
			mode |= os.ModeSetuid
		}
		if hdr.Mode&0o2000 != 0 {
			mode |= os.ModeSetgid
		}
		if hdr.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			t[p] = node{Type: "dir", Mode: mode}
		case tar.TypeReg:
			body, err := io.ReadAll(tr)
			if err != nil {
				tb.Fatalf("reading fixture entry %q: %v", hdr.Name, err)
			}
			t[p] = node{Type: "file", Mode: mode, SHA256: testkit.Hex(body), Size: int64(len(body))}
		case tar.TypeSymlink:
			t[p] = node{Type: "symlink", Target: hdr.Linkname}
		case tar.TypeLink:
			target, ok := t[cleanName(hdr.Linkname)]
			if !ok {
				tb.Fatalf("fixture hardlink %q -> %q: no such entry", hdr.Name, hdr.Linkname)
			}
			t[p] = target
		default:
			tb.Fatalf("fixture entry %q: type %q not expected in e2e fixtures", hdr.Name, hdr.Typeflag)
		}
	}
}

func (t tree) removeUnder(dir string) {
	for p := range t {
		if strings.HasPrefix(p, dir+"/") {
			delete(t, p)
		}
	}
}

// expectedTree applies layer tars in order to an empty rootfs.
func expectedTree(tb testing.TB, layers ...[]byte) tree {
	t := tree{}
	for _, l := range layers {
		t.apply(tb, l)
	}
	return t
}

// diffTrees lists the differences between want and got, at most max lines.
func diffTrees(want, got tree, max int) []string {
	var out []string
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !gok:
			out = append(out, fmt.Sprintf("missing %s (want %s)", k, w))
		case !wok:
			out = append(out, fmt.Sprintf("unexpected %s (%s)", k, g))
		case w != g:
			out = append(out, fmt.Sprintf("%s: want %s, got %s", k, w, g))
		}
		if len(out) >= max {
			out = append(out, "...")
			break
		}
	}
	return out
}

// dockerSaveArchive is a `docker save` tarball of one image: manifest.json,
// the config and the layer tars at their legacy paths.
func dockerSaveArchive(tb testing.TB, repoTag string, cfg map[string]any, layers ...[]byte) []byte {
	tb.Helper()
	var diffIDs, layerPaths []string
	var files []testkit.Entry
	for _, l := range layers {
		d := testkit.Hex(l)
		diffIDs = append(diffIDs, "sha256:"+d)
		layerPaths = append(layerPaths, d+"/layer.tar")
		files = append(files, testkit.Dir(d+"/"), testkit.File(d+"/layer.tar", string(l)))
	}
	cfg["rootfs"] = map[string]any{"type": "layers", "diff_ids": diffIDs}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	cfgName := testkit.Hex(cfgJSON) + ".json"
	manifest, err := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{repoTag}, "Layers": layerPaths}})
	if err != nil {
		tb.Fatal(err)
	}
	all := append([]testkit.Entry{testkit.File(cfgName, string(cfgJSON))}, files...)
	all = append(all, testkit.File("manifest.json", string(manifest)))
	return testkit.Tar(tb, all...)
}
