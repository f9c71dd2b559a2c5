package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/compression"
	"github.com/kiln-build/kiln/internal/testkit"
)

func ptr(v int64) *int64 { return &v }

// overrideInput has one of each kind an override treats differently.
func overrideInput(t testing.TB) []byte {
	return testkit.Tar(t,
		testkit.Entry{Name: "bin/", Type: tar.TypeDir, Mode: 0o755, Uname: "root"},
		testkit.Entry{Name: "bin/tool", Mode: 0o4750, Body: "elf", Uname: "root"},
		testkit.Entry{Name: "etc/", Type: tar.TypeDir, Mode: 0o700},
		testkit.Entry{Name: "etc/conf", Mode: 0o600, Body: "k=v"},
		testkit.Symlink("etc/link", "conf"),
	)
}

// rawField reads what every tar reader reads first: the ustar header
// fields themselves (the fixtures need no PAX or GNU records).
type rawField struct {
	mode, uid, gid int64
	uname          string
}

func rawHeaders(t *testing.T, b []byte) map[string]rawField {
	t.Helper()
	out := map[string]rawField{}
	for off := 0; off+512 <= len(b); {
		blk := b[off : off+512]
		if isZero(blk) {
			break
		}
		num := func(from, to int) int64 {
			v, err := strconv.ParseInt(strings.Trim(string(blk[from:to]), " \x00"), 8, 64)
			if err != nil {
				t.Fatalf("raw field %d-%d %q: %v", from, to, blk[from:to], err)
			}
			return v
		}
		name := cstring(blk[0:100])
		if blk[156] == 'x' || blk[156] == 'L' {
			t.Fatalf("fixture grew a %c header for %s", blk[156], name)
		}
		out[name] = rawField{num(100, 108), num(108, 116), num(116, 124), cstring(blk[265:297]) + cstring(blk[297:329])}
		off += 512 + int(num(124, 136)+511)/512*512
	}
	return out
}

func TestOverrides(t *testing.T) {
	tests := []struct {
		name    string
		o       Overrides
		want    map[string]rawField
		changes map[string]int
	}{{
		name: "fileMode keeps executables executable and leaves dirs and links",
		o:    Overrides{FileMode: ptr(0o644)},
		want: map[string]rawField{
			"bin/": {0o755, 0, 0, "root"}, "bin/tool": {0o755, 0, 0, "root"},
			"etc/": {0o700, 0, 0, ""}, "etc/conf": {0o644, 0, 0, ""}, "etc/link": {0o777, 0, 0, ""},
		},
		changes: map[string]int{ChangeOverriddenModes: 2, ChangeRewrittenHeaders: 2},
	}, {
		name: "a fileMode without read bits adds no execute bits",
		o:    Overrides{FileMode: ptr(0o600)},
		want: map[string]rawField{
			"bin/": {0o755, 0, 0, "root"}, "bin/tool": {0o700, 0, 0, "root"},
			"etc/": {0o700, 0, 0, ""}, "etc/conf": {0o600, 0, 0, ""}, "etc/link": {0o777, 0, 0, ""},
		},
		changes: map[string]int{ChangeOverriddenModes: 1, ChangeRewrittenHeaders: 1},
	}, {
		name: "dirMode",
		o:    Overrides{DirMode: ptr(0o750)},
		want: map[string]rawField{
			"bin/": {0o750, 0, 0, "root"}, "bin/tool": {0o4750, 0, 0, "root"},
			"etc/": {0o750, 0, 0, ""}, "etc/conf": {0o600, 0, 0, ""}, "etc/link": {0o777, 0, 0, ""},
		},
		changes: map[string]int{ChangeOverriddenModes: 2, ChangeRewrittenHeaders: 2},
	}, {
		name: "uid and gid set every owner and clear the names",
		o:    Overrides{UID: ptr(1000), GID: ptr(2000)},
		want: map[string]rawField{
			"bin/": {0o755, 1000, 2000, ""}, "bin/tool": {0o4750, 1000, 2000, ""},
			"etc/": {0o700, 1000, 2000, ""}, "etc/conf": {0o600, 1000, 2000, ""}, "etc/link": {0o777, 1000, 2000, ""},
		},
		changes: map[string]int{ChangeOverriddenOwners: 5, ChangeRewrittenHeaders: 5},
	}, {
		name: "uid 0 only clears names where they are set",
		o:    Overrides{UID: ptr(0)},
		want: map[string]rawField{
			"bin/": {0o755, 0, 0, ""}, "bin/tool": {0o4750, 0, 0, ""},
			"etc/": {0o700, 0, 0, ""}, "etc/conf": {0o600, 0, 0, ""}, "etc/link": {0o777, 0, 0, ""},
		},
		changes: map[string]int{ChangeOverriddenOwners: 2, ChangeRewrittenHeaders: 2},
	}}
	in := overrideInput(t)
	for _, tt := range tests {
		for _, mode := range []Mode{Minimal, Reproducible} {
			t.Run(tt.name+"/"+string(mode), func(t *testing.T) {
				out, st, err := normalize(t, in, Options{Mode: mode, Overrides: tt.o})
				if err != nil {
					t.Fatal(err)
				}
				want := tt.want
				if mode == Reproducible { // owner names are always cleared there
					want = map[string]rawField{}
					for k, v := range tt.want {
						v.uname = ""
						want[k] = v
					}
				}
				if got := rawHeaders(t, out); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("raw headers\n got %v\nwant %v", got, want)
				}
				for _, h := range listTar(t, out) {
					w := want[h.Name]
					if h.Mode != w.mode || int64(h.Uid) != w.uid || int64(h.Gid) != w.gid || h.Uname+h.Gname != w.uname {
						t.Errorf("archive/tar reads %s as mode %o owner %d:%d %q, want %+v", h.Name, h.Mode, h.Uid, h.Gid, h.Uname, w)
					}
				}
				if mode == Minimal && fmt.Sprint(st.Changes) != fmt.Sprint(tt.changes) {
					t.Errorf("changes %v, want %v", st.Changes, tt.changes)
				}
				for _, k := range []string{ChangeOverriddenModes, ChangeOverriddenOwners} {
					if st.Changes[k] != tt.changes[k] {
						t.Errorf("%s = %d, want %d", k, st.Changes[k], tt.changes[k])
					}
				}
			})
		}
	}
}

// An override that changes a header turns the gzip fast path off: the
// input bytes are not the blob, and the blob carries the override. One that
// changes nothing keeps the input bytes.
func TestOverridesFastPath(t *testing.T) {
	plain := testkit.Tar(t, testkit.Dir("d/"), testkit.File("d/f", "x"))
	for _, tt := range []struct {
		name string
		tar  []byte
		o    Overrides
		same bool
	}{
		{"changing modes", overrideInput(t), Overrides{FileMode: ptr(0o644)}, false},
		{"changing owners", plain, Overrides{UID: ptr(1)}, false},
		{"already so", plain, Overrides{FileMode: ptr(0o644), DirMode: ptr(0o755), UID: ptr(0), GID: ptr(0)}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := compress(t, tt.tar, compression.Gzip)
			s := openStore(t)
			res, err := Build(context.Background(), bytes.NewReader(in), BuildOptions{Options: Options{Overrides: tt.o}}, s)
			if err != nil {
				t.Fatal(err)
			}
			if same := bytes.Equal(blobBytes(t, s, res), in); same != tt.same {
				t.Fatalf("blob is the input: %t, want %t", same, tt.same)
			}
			want, _, err := normalize(t, tt.tar, Options{Overrides: tt.o})
			if err != nil {
				t.Fatal(err)
			}
			if got := decompressBlob(t, s, res); !bytes.Equal(got, want) || res.DiffID.String() != testkit.Digest(want) {
				t.Fatal("blob is not the normalized tar with the overrides")
			}
		})
	}
}

func TestOverridesString(t *testing.T) {
	if s := (Overrides{}).String(); s != "" {
		t.Errorf("empty: %q", s)
	}
	if s := (Overrides{FileMode: ptr(0o644), DirMode: ptr(0o755), UID: ptr(0), GID: ptr(10)}).String(); s != " fileMode=644 dirMode=755 uid=0 gid=10" {
		t.Errorf("got %q", s)
	}
}
