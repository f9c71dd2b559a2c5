package registry

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/internal/failure"
)

func TestPushTwiceSecondIsUpToDate(t *testing.T) {
	reg := newTestRegistry(t)
	img := randomImage(t)
	ctx := context.Background()
	target := reg.Host + "/team/app:1.0"

	res, err := Push(ctx, img, target, []string{"latest"}, testOptions(&sleeps{}))
	if err != nil {
		t.Fatal(err)
	}
	if res.UpToDate || res.Digest != digestOf(t, img) {
		t.Fatalf("first push: %+v", res)
	}
	if res.BlobsUploaded != 4 { // 3 layers + config
		t.Errorf("BlobsUploaded = %d, want 4", res.BlobsUploaded)
	}
	if res.BytesUploaded <= 0 {
		t.Errorf("BytesUploaded = %d", res.BytesUploaded)
	}
	if got := strings.Join(res.Tags, ","); got != "1.0,latest" {
		t.Errorf("Tags = %q", got)
	}
	if want := reg.Host + "/team/app@" + res.Digest.String(); res.Image != want {
		t.Errorf("Image = %q, want %q", res.Image, want)
	}
	// Manifest PUTs: the target tag and the extra tag.
	if got := reg.Count(http.MethodPut); got != 4+2 {
		t.Errorf("first push made %d PUTs, want 6 (4 blob commits + 2 manifests)", got)
	}

	reg.reset()
	res, err = Push(ctx, img, target, []string{"latest"}, testOptions(&sleeps{}))
	if err != nil {
		t.Fatal(err)
	}
	if !res.UpToDate || res.BlobsUploaded != 0 || res.BytesUploaded != 0 {
		t.Fatalf("second push: %+v", res)
	}
	if n := reg.Writes(); n != 0 {
		t.Fatalf("second push made %d PUT/POST/PATCH requests, want 0", n)
	}
	if got := strings.Join(res.Tags, ","); got != "1.0,latest" {
		t.Errorf("Tags = %q", got)
	}
}

// Force writes the manifest again (one PUT) when the target already holds
// it, uploads no blob and leaves an extra tag that points at it alone.
func TestPushForceRewritesTheManifestOnly(t *testing.T) {
	reg := newTestRegistry(t)
	img := randomImage(t)
	ctx := context.Background()
	target := reg.Host + "/team/app:1.0"
	if _, err := Push(ctx, img, target, []string{"latest"}, testOptions(&sleeps{})); err != nil {
		t.Fatal(err)
	}
	reg.reset()
	o := testOptions(&sleeps{})
	o.Force = true
	res, err := Push(ctx, img, target, []string{"latest"}, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.UpToDate || res.BlobsUploaded != 0 || res.Digest != digestOf(t, img) {
		t.Fatalf("forced push: %+v", res)
	}
	if n, puts := reg.Writes(), reg.Count(http.MethodPut); n != 1 || puts != 1 {
		t.Errorf("forced push made %d writes (%d PUTs), want exactly one manifest PUT", n, puts)
	}
}

func TestPushMovesOnlyMissingTags(t *testing.T) {
	reg := newTestRegistry(t)
	img := randomImage(t)
	ctx := context.Background()
	target := reg.Host + "/team/app:1.0"
	if _, err := Push(ctx, img, target, nil, testOptions(&sleeps{})); err != nil {
		t.Fatal(err)
	}
	reg.reset()
	res, err := Push(ctx, img, target, []string{"latest", "stable"}, testOptions(&sleeps{}))
	if err != nil {
		t.Fatal(err)
	}
	if !res.UpToDate {
		t.Fatalf("want UpToDate: %+v", res)
	}
	if got := reg.Count(http.MethodPut); got != 2 {
		t.Errorf("%d PUTs, want 2 (one per new tag)", got)
	}
	if reg.Count(http.MethodPost)+reg.Count(http.MethodPatch) != 0 {
		t.Errorf("blob uploads on an up-to-date push")
	}
	ok, err := Exists(ctx, reg.Host+"/team/app:stable", res.Digest, testOptions(&sleeps{}))
	if err != nil || !ok {
		t.Fatalf("Exists(stable) = %v, %v", ok, err)
	}
}

func TestPushByDigestTarget(t *testing.T) {
	reg := newTestRegistry(t)
	img := randomImage(t)
	d := digestOf(t, img)
	res, err := Push(context.Background(), img, reg.Host+"/team/app@"+d.String(), nil, testOptions(&sleeps{}))
	if err != nil || res.Digest != d || len(res.Tags) != 0 {
		t.Fatalf("Push = %+v, %v", res, err)
	}
	other := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	_, err = Push(context.Background(), img, reg.Host+"/team/app@"+other.String(), nil, testOptions(&sleeps{}))
	assertFailure(t, err, failure.InvalidSpec, "pins digest sha256:aaaa")
}

func TestPushSurvivesFaults(t *testing.T) {
	img := randomImage(t)
	want := digestOf(t, img)

	reg := newTestRegistry(t)
	reg.fail503 = 2
	reg.resetPatches = 1
	s := &sleeps{}
	res, err := Push(context.Background(), img, reg.Host+"/team/app:1.0", []string{"latest"}, testOptions(s))
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != want {
		t.Fatalf("digest %s, want %s", res.Digest, want)
	}
	if len(s.d) == 0 {
		t.Fatal("no retry waited")
	}
	for _, d := range s.d {
		if d <= 0 || d > backoffCap {
			t.Errorf("wait %v out of (0, %v]", d, backoffCap)
		}
	}
	// The registry holds the complete image.
	ref, _ := name.ParseReference(reg.Host + "/team/app:latest")
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, got); d != want {
		t.Fatalf("pulled %s, want %s", d, want)
	}
	ls, _ := got.Layers()
	for i, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		rc.Close()
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	reg := newTestRegistry(t)
	reg.fail503 = 1
	reg.retryAfter = "7"
	s := &sleeps{}
	if _, err := Push(context.Background(), randomImage(t), reg.Host+"/a/b:1", nil, testOptions(s)); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range s.d {
		found = found || d.Seconds() == 7
	}
	if !found {
		t.Fatalf("waits %v do not include the 7s Retry-After", s.d)
	}
}

func TestRetryAfterTooLongIsRetryableWithHint(t *testing.T) {
	reg := newTestRegistry(t)
	reg.fail503 = 1000
	reg.retryAfter = "3600"
	_, err := Push(context.Background(), randomImage(t), reg.Host+"/a/b:1", nil, testOptions(&sleeps{}))
	if err == nil || failure.IsPermanent(err) {
		t.Fatalf("want a retryable error, got %v", err)
	}
	if got := failure.RetryAfterOf(err); got.Hours() != 1 {
		t.Fatalf("RetryAfter = %v, want 1h (err %v)", got, err)
	}
	if !strings.Contains(err.Error(), "retry after 1h0m0s") {
		t.Fatalf("message %q", err)
	}
}

func TestPushUnauthorized(t *testing.T) {
	for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		reg := newTestRegistry(t)
		reg.status = code
		_, err := Push(context.Background(), randomImage(t), reg.Host+"/a/b:1", nil, testOptions(&sleeps{}))
		assertFailure(t, err, failure.Unauthorized, "check the pull secrets of serviceAccountName")
		if reg.Writes() != 0 {
			t.Fatal("writes reached the registry")
		}
	}
}

func TestPushServerErrorsExhaustRetries(t *testing.T) {
	reg := newTestRegistry(t)
	reg.fail503 = 1000
	s := &sleeps{}
	_, err := Push(context.Background(), randomImage(t), reg.Host+"/a/b:1", nil, testOptions(s))
	if err == nil || failure.IsPermanent(err) {
		t.Fatalf("want retryable, got %v", err)
	}
	if !strings.HasPrefix(err.Error(), "target "+reg.Host+"/a/b:1: ") {
		t.Fatalf("message %q does not name the target", err)
	}
	if len(s.d) != defaultRetries {
		t.Fatalf("%d waits, want %d", len(s.d), defaultRetries)
	}
}

func TestPushInvalidInput(t *testing.T) {
	img := randomImage(t)
	_, err := Push(context.Background(), img, "Not A Ref", nil, Options{})
	assertFailure(t, err, failure.InvalidSpec, `image reference "Not A Ref" is invalid`)
	_, err = Push(context.Background(), img, "localhost:1/a:b", []string{"bad tag"}, Options{})
	assertFailure(t, err, failure.InvalidSpec, `target tag "bad tag" is not a valid tag`)
}

func TestPushCancelled(t *testing.T) {
	reg := newTestRegistry(t)
	reg.fail503 = 1000
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Push(ctx, randomImage(t), reg.Host+"/a/b:1", nil, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
}

func assertFailure(t *testing.T, err error, reason failure.Reason, fragment string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s error containing %q, got nil", reason, fragment)
	}
	if got := failure.ReasonOf(err); got != reason {
		t.Fatalf("reason %s, want %s (err: %v)", got, reason, err)
	}
	if !strings.Contains(err.Error(), fragment) {
		t.Fatalf("error %q does not contain %q", err, fragment)
	}
}

// TestPushConfirmsTheRegistryDigest: the digest Push reports is the one the
// registry gives for each manifest PUT (or, when it gives none, for a HEAD);
// one that is not the image's fails the push before any further tag moves.
func TestPushConfirmsTheRegistryDigest(t *testing.T) {
	other := "sha256:" + strings.Repeat("b", 64)
	tests := []struct {
		name    string
		rewrite func(method string, puts int) (string, bool)
		reason  failure.Reason // "" for success
		frag    string
		latest  bool // the extra tag was moved
	}{
		{"registry's digest matches", func(string, int) (string, bool) { return "", false }, "", "", true},
		{"PUT reports another digest", func(m string, _ int) (string, bool) { return other, m == http.MethodPut },
			failure.PushRejected, "registry reports digest " + other + " for the pushed manifest, kiln computed sha256:", false},
		{"PUT without digest, HEAD confirms", func(m string, _ int) (string, bool) { return "", m == http.MethodPut }, "", "", true},
		{"PUT without digest, HEAD reports another", func(m string, puts int) (string, bool) {
			if m == http.MethodPut {
				return "", true
			}
			return other, m == http.MethodHead && puts > 0 // the first HEAD asks whether the target is up to date
		}, failure.PushRejected, "registry reports digest " + other, false},
		{"PUT with an invalid digest", func(m string, _ int) (string, bool) { return "md5:x", m == http.MethodPut },
			failure.PushRejected, `invalid Docker-Content-Digest "md5:x"`, false},
		{"extra tag PUT reports another digest", func(m string, puts int) (string, bool) { return other, m == http.MethodPut && puts == 2 },
			failure.PushRejected, "target tag ", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newTestRegistry(t)
			puts := 0
			reg.manifestDigest = func(m string) (string, bool) {
				if m == http.MethodPut {
					puts++
				}
				return tt.rewrite(m, puts)
			}
			img := randomImage(t)
			want := digestOf(t, img)
			res, err := Push(context.Background(), img, reg.Host+"/team/app:1.0", []string{"latest"}, testOptions(&sleeps{}))
			if tt.reason == "" {
				if err != nil || res.Digest != want {
					t.Fatalf("Push = %+v, %v; want digest %s", res, err, want)
				}
			} else {
				assertFailure(t, err, tt.reason, tt.frag)
				if !strings.Contains(err.Error(), want.String()) && tt.name != "PUT with an invalid digest" {
					t.Fatalf("error %q does not name kiln's digest %s", err, want)
				}
			}
			reg.manifestDigest = nil
			_, herr := remote.Head(mustRef(t, reg.Host+"/team/app:latest"))
			if moved := herr == nil; moved != tt.latest {
				t.Fatalf("extra tag moved = %v (HEAD: %v), want %v", moved, herr, tt.latest)
			}
		})
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestPushRetryBudget counts the requests a push makes against a failing
// registry: each request retries at most Retries times, and all of them
// together, with go-containerregistry's restarts of whole blob uploads, at
// most pushBudget times.
func TestPushRetryBudget(t *testing.T) {
	img := randomImage(t) // 3 layers + config, pushed to a tag and one extra tag
	budget := defaultRetries * (4 + 2 + 1)
	// go-containerregistry waits between restarts on a timer of its own.
	saved := uploadBackoff
	uploadBackoff.Duration = time.Millisecond
	t.Cleanup(func() { uploadBackoff = saved })
	tests := []struct {
		name  string
		setup func(*testRegistry)
		check func(t *testing.T, reg *testRegistry, waits int)
	}{
		{"persistent 503", func(r *testRegistry) { r.fail503 = 1 << 20 }, func(t *testing.T, reg *testRegistry, waits int) {
			// The first request (the ping) is one chain of 1+Retries requests.
			if n := reg.Attempts(http.MethodGet); n != 1+defaultRetries || waits != defaultRetries {
				t.Fatalf("%d GETs and %d waits, want %d and %d", n, waits, 1+defaultRetries, defaultRetries)
			}
		}},
		{"every request fails Retries times", func(r *testRegistry) { r.fail503Each = defaultRetries }, func(t *testing.T, reg *testRegistry, waits int) {
			// Each request alone would succeed on its last retry, so only an
			// empty budget ends the push: after exactly the budget's retries.
			if waits != budget {
				t.Fatalf("%d waits, want the budget, %d", waits, budget)
			}
		}},
		{"persistent reset of every PATCH", func(r *testRegistry) { r.resetPatches = 1 << 20 }, func(t *testing.T, reg *testRegistry, waits int) {
			// Not retried per request (the registry may hold part of the
			// chunk): each is a restart of the whole upload, i.e. a new POST.
			posts, patches := reg.Attempts(http.MethodPost), reg.Attempts(http.MethodPatch)
			if restarts := posts - 4; waits+restarts > budget || patches > 4*uploadBackoff.Steps || patches <= 4 {
				t.Fatalf("%d waits, %d POSTs, %d PATCHes: want waits+restarts <= %d, 4 < PATCHes <= %d", waits, posts, patches, budget, 4*uploadBackoff.Steps)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newTestRegistry(t)
			tt.setup(reg)
			s := &sleeps{}
			_, err := Push(context.Background(), img, reg.Host+"/a/b:1", []string{"latest"}, testOptions(s))
			if err == nil || failure.IsPermanent(err) {
				t.Fatalf("want a retryable error, got %v", err)
			}
			s.mu.Lock()
			waits := len(s.d)
			s.mu.Unlock()
			tt.check(t, reg, waits)
		})
	}
}
