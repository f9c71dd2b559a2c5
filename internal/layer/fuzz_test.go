package layer

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

// FuzzNormalize: Normalize never panics or hangs; when it succeeds its
// output is a tar archive/tar reads to EOF, normalizing the output again
// changes nothing (so the DiffID Build records, the sha256 of the bytes
// Normalize wrote, is stable), and an unchanged minimal pass is the input.
func FuzzNormalize(f *testing.F) {
	f.Add(testkit.Tar(f, testkit.Dir("a/"), testkit.File("a/b", "hello"), testkit.Symlink("a/l", "/etc"), testkit.Hardlink("a/h", "a/b")), uint8(0))
	f.Add(testkit.Tar(f, testkit.Dir("./"), testkit.Dir("./Files/"), testkit.File("./Files/app.exe", "MZ"), testkit.Dir("./Hives/")), uint8(2))
	f.Add(testkit.Tar(f, testkit.Dir("./"), testkit.File("./app.exe", "MZ"), testkit.Dir("./sub/"), testkit.File("./sub/x", "1")), uint8(3))
	f.Add(testkit.Tar(f, testkit.Dir("d/"), testkit.Dir("./d"), testkit.File("d/x", "1"), testkit.File("./d/x", "2")), uint8(1))
	f.Add(testkit.Tar(f, testkit.File("a/.wh.b", ""), testkit.File("a/.wh..wh..opq", ""), testkit.File("/abs", "x")), uint8(1))
	f.Add(make([]byte, 1024), uint8(2))
	f.Add(testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "a/b")), testkit.Meta('L', "a/b\x00"), testkit.Block{Type: '0', Name: "x"}.Bytes(),
		testkit.Meta('K', "t\x00"), testkit.Block{Type: '2', Name: "l"}.Bytes()), uint8(0))
	f.Add(testkit.RawTar(testkit.Block{Type: '0', Name: "f", Magic: testkit.MagicGNU, Patch: map[int]string{345: "1"}}.Bytes(),
		testkit.Block{Type: 0, Name: "d/"}.Bytes(), testkit.Block{Type: '0', Name: "f", Patch: map[int]string{345: "d"}}.Bytes()), uint8(1))
	f.Add(testkit.Tar(f, testkit.File("a/b/c", "1"), testkit.Dir("a/"), testkit.File("a/.wh..", ""), testkit.File("CON.txt", ""), testkit.File("x:y", "")), uint8(2))
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
