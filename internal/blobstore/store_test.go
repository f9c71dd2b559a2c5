package blobstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

func newStore(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s *Store, b []byte) v1.Hash {
	t.Helper()
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	d, err := w.Commit(v1.Hash{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func blobFiles(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func assertNoTemps(t *testing.T, s *Store) {
	t.Helper()
	temps, err := s.TempFiles()
	if err != nil {
		t.Fatal(err)
	}
	if len(temps) != 0 {
		t.Fatalf("temp files left behind: %v", temps)
	}
}

func TestWriteCommitOpen(t *testing.T) {
	s := newStore(t, Options{})
	content := []byte("hello layer")
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(content[:5])
	w.Write(content[5:])
	if w.Size() != int64(len(content)) || w.Digest() != testkit.Hash(content) {
		t.Fatalf("Size/Digest = %d/%s, want %d/%s", w.Size(), w.Digest(), len(content), testkit.Hash(content))
	}
	d, err := w.Commit(testkit.Hash(content))
	if err != nil {
		t.Fatal(err)
	}
	if d != testkit.Hash(content) || !s.Has(d) {
		t.Fatalf("Commit = %s, Has = %v", d, s.Has(d))
	}
	if size, err := s.Stat(d); err != nil || size != int64(len(content)) {
		t.Fatalf("Stat = %d, %v", size, err)
	}
	rc, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, content) {
		t.Fatalf("read %q", got)
	}
	if s.Path(d) != filepath.Join(s.root, "blobs", "sha256", d.Hex) {
		t.Fatalf("Path = %s", s.Path(d))
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort after Commit: %v", err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write after Commit succeeded")
	}
	if !s.Has(d) {
		t.Fatal("Abort after Commit removed the blob")
	}
	assertNoTemps(t, s)
}

func TestMissingAndInvalid(t *testing.T) {
	s := newStore(t, Options{})
	missing := testkit.Hash([]byte("nope"))
	if s.Has(missing) {
		t.Fatal("Has(missing) = true")
	}
	if _, err := s.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat(missing) = %v, want ErrNotExist", err)
	}
	if _, err := s.Open(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open(missing) = %v, want ErrNotExist", err)
	}
	for _, h := range []v1.Hash{
		{Algorithm: "sha256", Hex: "../../etc/passwd"},
		{Algorithm: "sha512", Hex: missing.Hex},
		{Algorithm: "sha256", Hex: strings.ToUpper(missing.Hex)},
		{},
	} {
		if p := s.Path(h); p != "" {
			t.Errorf("Path(%v) = %q, want empty", h, p)
		}
		if _, err := s.Open(h); err == nil || !strings.Contains(err.Error(), "is not a sha256 digest") {
			t.Errorf("Open(%v) = %v", h, err)
		}
	}
}

func TestConcurrentIdenticalWrites(t *testing.T) {
	s := newStore(t, Options{})
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	digests := make([]v1.Hash, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			w, err := s.NewWriter()
			if err != nil {
				errs[i] = err
				return
			}
			defer w.Abort()
			digests[i], errs[i] = w.Commit(v1.Hash{}) // empty content
		}()
	}
	close(start)
	wg.Wait()
	empty := testkit.Hash(nil)
	for i := range n {
		if errs[i] != nil || digests[i] != empty {
			t.Errorf("writer %d: %s, %v", i, digests[i], errs[i])
		}
	}
	if files := blobFiles(t, s); len(files) != 1 || files[0] != empty.Hex {
		t.Fatalf("blob files = %v, want just %s", files, empty.Hex)
	}
	assertNoTemps(t, s)
}

func TestCommitWrongDigest(t *testing.T) {
	s := newStore(t, Options{})
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("actual"))
	want := testkit.Hash([]byte("expected"))
	_, err = w.Commit(want)
	if err == nil {
		t.Fatal("Commit with wrong digest succeeded")
	}
	wantMsg := fmt.Sprintf("written bytes (6) have digest %s, expected %s", testkit.Hash([]byte("actual")), want)
	if !strings.Contains(err.Error(), wantMsg) {
		t.Fatalf("error %q does not contain %q", err, wantMsg)
	}
	if failure.ReasonOf(err) != failure.DigestMismatch || !failure.IsPermanent(err) {
		t.Fatalf("error class = %v", failure.ReasonOf(err))
	}
	if files := blobFiles(t, s); len(files) != 0 {
		t.Fatalf("blob files = %v", files)
	}
	assertNoTemps(t, s)
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
}

func TestAbortRemovesTemp(t *testing.T) {
	s := newStore(t, Options{})
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("partial"))
	got, err := os.ReadFile(w.TempPath())
	if err != nil || string(got) != "partial" {
		t.Fatalf("TempPath content = %q, %v", got, err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(v1.Hash{}); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	assertNoTemps(t, s)
}

// The destination already exists: the blob was written before (or by a
// concurrent writer that won). Commit keeps a file of the right size without
// renaming onto it (which fails on Windows while a reader holds it open) and
// replaces one a crash left short.
func TestCommitOntoExistingBlob(t *testing.T) {
	content := []byte("same bytes")
	tests := []struct {
		name       string
		existing   []byte
		wantRename bool
	}{
		{name: "right size: kept, no rename", existing: content},
		{name: "empty after a crash: replaced", existing: []byte{}, wantRename: true},
		{name: "truncated after a crash: replaced", existing: content[:4], wantRename: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, Options{})
			d := testkit.Hash(content)
			if err := os.WriteFile(s.Path(d), tt.existing, 0o644); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Stat(s.Path(d))
			renamed := false
			s.rename = func(oldpath, newpath string) error { renamed = true; return os.Rename(oldpath, newpath) }
			if got := put(t, s, content); got != d {
				t.Fatalf("Commit = %s, want %s", got, d)
			}
			if renamed != tt.wantRename {
				t.Errorf("renamed = %v, want %v", renamed, tt.wantRename)
			}
			after, _ := os.Stat(s.Path(d))
			if kept := os.SameFile(before, after); kept == tt.wantRename {
				t.Errorf("existing file kept = %v, want %v", kept, !tt.wantRename)
			}
			if got, _ := os.ReadFile(s.Path(d)); !bytes.Equal(got, content) {
				t.Errorf("blob holds %q, want %q", got, content)
			}
			assertNoTemps(t, s)
		})
	}
}

// The Windows race: another writer renames the same blob into place between
// our existence check and our rename, and the OS refuses to replace it.
func TestCommitRenameRace(t *testing.T) {
	tests := []struct {
		name    string
		other   []byte // what the competing writer put at the destination; nil = nothing
		wantErr string
	}{
		{name: "same content wins", other: []byte("racy")},
		{name: "destination corrupt", other: []byte("RACY"), wantErr: "blob store: storing sha256:"},
		{name: "destination missing", wantErr: "Access is denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, Options{})
			s.rename = func(oldpath, newpath string) error {
				if tt.other != nil {
					if err := os.WriteFile(newpath, tt.other, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: errors.New("Access is denied")}
			}
			w, err := s.NewWriter()
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte("racy"))
			d, err := w.Commit(v1.Hash{})
			if tt.wantErr == "" {
				if err != nil || d != testkit.Hash([]byte("racy")) {
					t.Fatalf("Commit = %s, %v", d, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Commit error = %v, want %q", err, tt.wantErr)
			}
			assertNoTemps(t, s)
		})
	}
}

// Report 2 of DESIGN.md, with the real os.Rename: a concurrent writer of the
// same layer puts the blob in place between our existence check and our
// rename, and a reader holds it open. Windows refuses the rename
// (ACCESS_DENIED), Unix replaces the file; either way Commit succeeds and the
// reader keeps reading the right bytes.
func TestCommitRenameOntoOpenBlob(t *testing.T) {
	s := newStore(t, Options{})
	content := []byte("identical layer")
	d := testkit.Hash(content)
	var reader io.ReadCloser
	s.rename = func(oldpath, newpath string) error {
		if err := os.WriteFile(newpath, content, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := s.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		reader = r
		return os.Rename(oldpath, newpath)
	}
	if got := put(t, s, content); got != d {
		t.Fatalf("Commit = %s, want %s", got, d)
	}
	defer reader.Close()
	if got, err := io.ReadAll(reader); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("reader got %q, %v", got, err)
	}
	assertNoTemps(t, s)
}

func TestStaleTempCleanup(t *testing.T) {
	root := t.TempDir()
	tmp := filepath.Join(root, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	const deadPID = 1 << 30 // above any kernel's pid_max
	files := []struct {
		name string
		age  time.Duration
		keep bool
	}{
		{name: tempName(selfHost, deadPID, "aaaaaaaa"), keep: false},
		{name: tempName(selfHost, selfPID, "00000000"), keep: false}, // pid reused after a restart
		{name: tempName(selfHost, selfPID, selfIncarnation), keep: true},
		{name: tempName(selfHost, os.Getppid(), "bbbbbbbb"), keep: true}, // live process
		{name: tempName("ffffffff", deadPID, "cccccccc"), keep: true},    // another host: cannot judge
		{name: tempName("ffffffff", deadPID, "dddddddd"), age: 25 * time.Hour, keep: false},
		{name: tempName(selfHost, os.Getppid(), "eeeeeeee"), age: 25 * time.Hour, keep: false},
		{name: "foreign-file", keep: true},
		{name: "old-foreign-file", age: 25 * time.Hour, keep: false},
	}
	for _, f := range files {
		p := filepath.Join(tmp, f.name)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-f.age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(root, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		_, err := os.Stat(filepath.Join(tmp, f.name))
		if kept := err == nil; kept != f.keep {
			t.Errorf("%s (age %s): kept = %v, want %v", f.name, f.age, kept, f.keep)
		}
	}
}

func TestParseTempName(t *testing.T) {
	name := tempName("0123abcd", 4242, "feedbeef")
	o, ok := parseTempName(name)
	if !ok || o != (tempOwner{host: "0123abcd", pid: 4242, incarnation: "feedbeef"}) {
		t.Fatalf("parseTempName(%q) = %+v, %v", name, o, ok)
	}
	for _, bad := range []string{"x.tmp", "a-b-c-d.tmp", "a-0-c-d.tmp", "a-1-c-d", "a-1-c-d-e.tmp"} {
		if _, ok := parseTempName(bad); ok {
			t.Errorf("parseTempName(%q) ok", bad)
		}
	}
}

// fakeClock hands out strictly increasing times so LRU order never depends
// on the filesystem's timestamp granularity or the wall clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Minute)
	return c.t
}

func TestEvictLRU(t *testing.T) {
	s := newStore(t, Options{MaxBytes: 300})
	clock := &fakeClock{t: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.now = clock.now
	blob := func(c byte) []byte { return bytes.Repeat([]byte{c}, 100) }

	a, b, c := put(t, s, blob('a')), put(t, s, blob('b')), put(t, s, blob('c'))
	releaseA := s.Pin(a)
	rc, err := s.Open(b) // b becomes most recently used
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	d := put(t, s, blob('d')) // 400 > 300: a is oldest but pinned, c goes
	assertBlobs(t, s, map[v1.Hash]bool{a: true, b: true, c: false, d: true})

	releaseA()
	releaseA() // idempotent
	open, err := s.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	e := put(t, s, blob('e')) // a goes
	assertBlobs(t, s, map[v1.Hash]bool{a: false, b: true, d: true, e: true})

	f := put(t, s, blob('f')) // d is oldest unpinned; b is open
	assertBlobs(t, s, map[v1.Hash]bool{b: true, d: false, e: true, f: true})
	open.Close()

	// Pinned blobs alone over the limit: kept, no error.
	s.opts.MaxBytes = 50
	defer s.Pin(f)()
	if err := s.Evict(); err != nil {
		t.Fatal(err)
	}
	assertBlobs(t, s, map[v1.Hash]bool{b: false, e: false, f: true})
}

func assertBlobs(t *testing.T, s *Store, want map[v1.Hash]bool) {
	t.Helper()
	for d, present := range want {
		if s.Has(d) != present {
			t.Errorf("Has(%s...) = %v, want %v", d.Hex[:8], !present, present)
		}
	}
}

func TestCommitAndPin(t *testing.T) {
	s := newStore(t, Options{MaxBytes: 10}) // smaller than the blob
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("z"), 100))
	d, release, err := w.CommitAndPin(v1.Hash{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Has(d) {
		t.Fatal("pinned blob evicted by its own Commit")
	}
	release()
	if err := s.Evict(); err != nil {
		t.Fatal(err)
	}
	if s.Has(d) {
		t.Fatal("blob kept after release")
	}
}

func TestMeta(t *testing.T) {
	s := newStore(t, Options{})
	type rec struct {
		Digest string `json:"digest"`
		Size   int64  `json:"size"`
	}
	var got rec
	if ok, err := s.GetMeta("layer/none", &got); ok || err != nil {
		t.Fatalf("missing: %v, %v", ok, err)
	}
	key := "layer/sha256:abc/normalize=reproducible/../x"
	for _, want := range []rec{{"sha256:1", 1}, {"sha256:2", 2}} {
		if err := s.PutMeta(key, want); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.GetMeta(key, &got); !ok || err != nil || got != want {
			t.Fatalf("GetMeta = %+v, %v, %v; want %+v", got, ok, err, want)
		}
	}
	if err := os.WriteFile(s.metaPath(key), []byte("{torn"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.GetMeta(key, &got); ok || err == nil || !strings.Contains(err.Error(), `decoding metadata "layer/sha256:abc`) {
		t.Fatalf("corrupt record: %v, %v", ok, err)
	}
	if err := s.PutMeta("bad", func() {}); err == nil || !strings.Contains(err.Error(), `encoding metadata "bad"`) {
		t.Fatalf("unencodable: %v", err)
	}
	assertNoTemps(t, s)
}

func BenchmarkWriteCommit(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 32<<10)
	const total = 64 << 20
	b.SetBytes(total)
	for i := 0; b.Loop(); i++ {
		w, err := s.NewWriter()
		if err != nil {
			b.Fatal(err)
		}
		chunk[0] = byte(i) // distinct blobs
		chunk[1] = byte(i >> 8)
		for written := 0; written < total; written += len(chunk) {
			w.Write(chunk)
		}
		d, err := w.Commit(v1.Hash{})
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(s.Path(d))
	}
}

func BenchmarkEvict1000Blobs(b *testing.B) {
	s, err := Open(b.TempDir(), Options{MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		w, _ := s.NewWriter()
		fmt.Fprintf(w, "blob %d", i)
		if _, err := w.Commit(v1.Hash{}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if err := s.Evict(); err != nil {
			b.Fatal(err)
		}
	}
}
