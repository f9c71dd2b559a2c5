package engine

import (
	"context"
	"testing"

	"github.com/kiln-build/kiln/internal/testkit"
)

// TestFileListsFromBuildAndCache: a build asked for file lists gets them
// from the normalization pass; a later build on the same cache gets them
// from the cache record; a cache written by a build that kept no lists (an
// older kiln) gets them by one read of the stored blob, recorded for next
// time.
func TestFileListsFromBuildAndCache(t *testing.T) {
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	tarball := testkit.Tar(t, testkit.Dir("app/"), testkit.File("app/run", "#!/bin/sh\n"), testkit.Hardlink("app/run2", "app/run"), testkit.File("app/data", "42"))
	url := files.Put("/app.tar.gz", testkit.Gzip(t, tarball))
	ib := imageBuild("app", reg.Host+"/team/app:1.0", urlLayer("app", url))
	want := []string{"app/run " + testkit.Digest([]byte("#!/bin/sh\n")), "app/data " + testkit.Digest([]byte("42"))}
	check := func(t *testing.T, res *Result) {
		t.Helper()
		diffID := res.Status.Layers[0].DiffID
		fl := res.Files[diffID]
		if fl == nil || len(res.Files) != 1 {
			t.Fatalf("Files = %v, want one list under diffID %s", res.Files, diffID)
		}
		var got []string
		for _, f := range fl.Files {
			got = append(got, f.Path+" "+f.Digest.String())
		}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || fl.Count != 2 || fl.Omitted {
			t.Errorf("file list = %q (count %d, omitted %v), want %q", got, fl.Count, fl.Omitted, want)
		}
	}
	for _, tc := range []struct {
		name     string
		warmWith bool // the first build on the cache asked for lists
	}{{"lists cached", true}, {"older cache without lists", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first, err := newEngine(t, dir).Build(context.Background(), ib.DeepCopy(), Inputs{}, Options{Files: tc.warmWith})
			if err != nil {
				t.Fatal(err)
			}
			if tc.warmWith {
				check(t, first)
			} else if first.Files != nil {
				t.Errorf("Files = %v without Options.Files", first.Files)
			}
			e := newEngine(t, dir)
			second, err := e.Build(context.Background(), ib.DeepCopy(), Inputs{}, Options{Files: true})
			if err != nil {
				t.Fatal(err)
			}
			if second.CacheHits != 1 {
				t.Fatalf("second build: %d cache hits, want 1", second.CacheHits)
			}
			check(t, second)
			var rec struct{ Count int }
			if ok, err := e.Store.GetMeta(filesKey(second.Status.Layers[0].DiffID), &rec); !ok || err != nil || rec.Count != 2 {
				t.Errorf("file list record: found %v, %v, count %d; want it stored", ok, err, rec.Count)
			}
		})
	}
}
