package layer

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/failure"
)

// FuzzNormalize: Normalize never panics or hangs; when it succeeds its
// output is a tar archive/tar reads to EOF, normalizing the output again
// changes nothing (so the DiffID Build records, the sha256 of the bytes
// Normalize wrote, is stable), and an unchanged minimal pass is the input.
func FuzzNormalize(f *testing.F) {
	f.Add(mkTar(f, dir("a/"), file("a/b", "hello"), symlink("a/l", "/etc"), hardlink("a/h", "a/b")), uint8(0))
	f.Add(mkTar(f, dir("./"), dir("./Files/"), file("./Files/app.exe", "MZ"), dir("./Hives/")), uint8(2))
	f.Add(mkTar(f, dir("./"), file("./app.exe", "MZ"), dir("./sub/"), file("./sub/x", "1")), uint8(3))
	f.Add(mkTar(f, dir("d/"), dir("./d"), file("d/x", "1"), file("./d/x", "2")), uint8(1))
	f.Add(mkTar(f, file("a/.wh.b", ""), file("a/.wh..wh..opq", ""), file("/abs", "x")), uint8(1))
	f.Add(make([]byte, 1024), uint8(2))
	f.Add(rawTar(meta('x', paxRec("path", "a/b")), meta('L', "a/b\x00"), blk{typ: '0', name: "x"}.bytes(),
		meta('K', "t\x00"), blk{typ: '2', name: "l"}.bytes()), uint8(0))
	f.Add(rawTar(blk{typ: '0', name: "f", magic: magicGNU, patch: map[int]string{345: "1"}}.bytes(),
		blk{typ: 0, name: "d/"}.bytes(), blk{typ: '0', name: "f", patch: map[int]string{345: "d"}}.bytes()), uint8(1))
	f.Add(mkTar(f, file("a/b/c", "1"), dir("a/"), file("a/.wh..", ""), file("CON.txt", ""), file("x:y", "")), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		opts := Options{
			Windows: mode&2 != 0,
			Created: time.Unix(1e9, 0),
			Limits:  Limits{MaxUncompressedBytes: 1 << 20, MaxEntries: 1000, MaxHeaderBytes: 64 << 10},
		}
		if mode&1 != 0 {
			opts.Mode = Reproducible
		}
		var out bytes.Buffer
		h := sha256.New()
		st, err := Normalize(io.MultiWriter(&out, h), bytes.NewReader(data), opts)
		if err != nil {
			if !failure.IsPermanent(err) {
				t.Fatalf("bad input gave an unclassified error: %v", err)
			}
			return
		}
		if _, err := readAll(out.Bytes()); err != nil {
			t.Fatalf("output is not a valid tar: %v", err)
		}
		if !st.Changed && !bytes.Equal(out.Bytes(), data) {
			t.Fatal("Changed is false but the output differs from the input")
		}
		if st.Size != int64(out.Len()) {
			t.Fatalf("Size %d, wrote %d", st.Size, out.Len())
		}
		var again bytes.Buffer
		h2 := sha256.New()
		st2, err := Normalize(io.MultiWriter(&again, h2), bytes.NewReader(out.Bytes()), opts)
		if err != nil {
			t.Fatalf("normalizing the output again: %v", err)
		}
		if st2.Changed || !bytes.Equal(h.Sum(nil), h2.Sum(nil)) {
			t.Fatalf("not idempotent: %v", st2.Changes)
		}
	})
}
