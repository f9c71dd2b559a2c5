package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/egress/egresstest"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
)

const testArtifactType = "application/vnd.kiln.test.attestation+json"

// artifact is a small OCI artifact for subject: one blob, its config media
// type standing for the artifactType (as go-containerregistry reports it).
func artifact(t *testing.T, subject v1.Descriptor, payload string) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		static.NewLayer([]byte(payload), "application/vnd.dsse.envelope.v1+json"))
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, testArtifactType)
	return mutate.Subject(img, subject).(v1.Image)
}

// pushSubject pushes a random image and returns its repo@digest and descriptor.
func pushSubject(t *testing.T, host string, o Options) (string, v1.Descriptor) {
	t.Helper()
	img := randomImage(t)
	res, err := Push(context.Background(), img, host+"/team/app:1", nil, o)
	if err != nil {
		t.Fatal(err)
	}
	mt, _ := img.MediaType()
	raw, _ := img.RawManifest()
	return res.Image, v1.Descriptor{MediaType: mt, Digest: res.Digest, Size: int64(len(raw))}
}

func listReferrers(t *testing.T, subject string) map[v1.Hash]v1.Descriptor {
	t.Helper()
	d, err := name.NewDigest(subject)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Referrers(d)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[v1.Hash]v1.Descriptor{}
	for _, m := range im.Manifests {
		out[m.Digest] = m
	}
	return out
}

// fallbackTag is the referrers tag schema's tag of subject.
func fallbackTagOf(subject string) string {
	repo, digest, _ := strings.Cut(subject, "@")
	return repo + ":" + strings.Replace(digest, ":", "-", 1)
}

// putFallbackIndex writes the tag-schema index of subject as another tool
// would: with the descriptors given.
func putFallbackIndex(t *testing.T, subject string, descs ...v1.Descriptor) {
	t.Helper()
	tag, err := name.NewTag(fallbackTagOf(subject))
	if err != nil {
		t.Fatal(err)
	}
	im := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: descs}
	raw, err := json.Marshal(im)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(tag, rawIndex(raw)); err != nil {
		t.Fatal(err)
	}
}

type rawIndex []byte

func (r rawIndex) RawManifest() ([]byte, error)        { return r, nil }
func (r rawIndex) MediaType() (types.MediaType, error) { return types.OCIImageIndex, nil }

// TestPushReferrers: with the referrers API (native) and without it (the
// tag schema, as on the CNCF distribution registry), artifacts get listed;
// without it an entry another tool put in the fallback index stays; a
// second run writes nothing; an artifact whose listing was lost (a racing
// writer replaced the index) is written again.
func TestPushReferrers(t *testing.T) {
	for _, native := range []bool{true, false} {
		t.Run(map[bool]string{true: "referrers API", false: "tag schema fallback"}[native], func(t *testing.T) {
			reg := testkit.NewRegistry(t, ggcrregistry.WithReferrersSupport(native))
			o := testOptions(&sleeps{})
			subject, desc := pushSubject(t, reg.Host, o)
			// Another tool's entry in the fallback index (the registry wants
			// the manifests an index lists to exist: it is pushed plain).
			foreign := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), "application/vnd.other")
			foreignRaw, _ := foreign.RawManifest()
			foreignDesc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: digestOf(t, foreign), Size: int64(len(foreignRaw)), ArtifactType: "application/vnd.other"}
			if !native {
				ref, err := name.NewDigest(reg.Host + "/team/app@" + foreignDesc.Digest.String())
				if err != nil {
					t.Fatal(err)
				}
				if err := remote.Write(ref, foreign); err != nil {
					t.Fatal(err)
				}
				putFallbackIndex(t, subject, foreignDesc)
			}
			arts := []v1.Image{artifact(t, desc, "sbom"), artifact(t, desc, "provenance")}

			reg.Reset()
			n, err := PushReferrers(context.Background(), subject, arts, o)
			if err != nil || n != 2 {
				t.Fatalf("first run: %d written, %v; want 2", n, err)
			}
			listed := listReferrers(t, subject)
			for _, a := range arts {
				d := listed[digestOf(t, a)]
				if d.ArtifactType != testArtifactType {
					t.Errorf("artifact %s listed as %+v, want artifactType %s", digestOf(t, a), d, testArtifactType)
				}
			}
			if !native {
				if _, ok := listed[foreignDesc.Digest]; !ok || len(listed) != 3 {
					t.Errorf("fallback index = %v, want the foreign entry kept and both artifacts", listed)
				}
				if reg.Count("GET other") == 0 {
					t.Error("the referrers API was not asked before falling back")
				}
			} else if len(listed) != 2 {
				t.Errorf("referrers = %v, want both artifacts", listed)
			}

			reg.Reset()
			n, err = PushReferrers(context.Background(), subject, arts, o)
			if err != nil || n != 0 || reg.Writes() != 0 {
				t.Fatalf("second run: %d written, %v, %d registry writes; want 0, 0", n, err, reg.Writes())
			}

			if native {
				return
			}
			// A racing writer replaced the index without kiln's second
			// artifact: the manifest is still there, but not listed.
			putFallbackIndex(t, subject, foreignDesc, listed[digestOf(t, arts[0])])
			reg.Reset()
			n, err = PushReferrers(context.Background(), subject, arts, o)
			if err != nil || n != 1 {
				t.Fatalf("after a lost update: %d written, %v; want 1", n, err)
			}
			if got := listReferrers(t, subject); len(got) != 3 {
				t.Errorf("fallback index after repair = %v, want 3 entries", got)
			}
		})
	}
}

func TestPushReferrersErrors(t *testing.T) {
	reg := testkit.NewRegistry(t)
	o := testOptions(&sleeps{})
	subject, desc := pushSubject(t, reg.Host, o)
	other := desc
	other.Digest = testkit.Hash([]byte("another image"))
	manifestInvalid := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/manifests/sha256:") {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"errors":[{"code":"MANIFEST_INVALID","message":"subject not supported"}]}`))
		return true
	}
	unauthorized := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet {
			return false
		}
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
	for _, tc := range []struct {
		name      string
		subject   string
		arts      []v1.Image
		fault     testkit.Fault
		reason    failure.Reason
		permanent bool
		want      string
	}{
		{name: "rejected referrer is transient", subject: subject, arts: []v1.Image{artifact(t, desc, "x")}, fault: manifestInvalid,
			reason: failure.PushRejected, want: "the registry rejected the push"},
		{name: "unauthorized stays permanent", subject: subject, arts: []v1.Image{artifact(t, desc, "x")}, fault: unauthorized,
			reason: failure.Unauthorized, permanent: true, want: "referrers of " + subject},
		{name: "artifact for another subject", subject: subject, arts: []v1.Image{artifact(t, other, "x")},
			reason: failure.InvalidSpec, permanent: true, want: "does not name " + desc.Digest.String()},
		{name: "subject by tag", subject: reg.Host + "/team/app:1", arts: []v1.Image{artifact(t, desc, "x")},
			reason: failure.InvalidSpec, permanent: true, want: "must be a reference by digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg.SetFault(tc.fault)
			defer reg.SetFault(nil)
			n, err := PushReferrers(context.Background(), tc.subject, tc.arts, o)
			assertFailure(t, err, tc.reason, tc.want)
			if failure.IsPermanent(err) != tc.permanent || n != 0 {
				t.Errorf("permanent = %v, written %d; want %v, 0 (err %v)", failure.IsPermanent(err), n, tc.permanent, err)
			}
		})
	}
}

// PushReferrers connects like Push: through Options.Transport and under
// the host policy, which refuses a metadata address before dialling it.
func TestPushReferrersEgress(t *testing.T) {
	reg := testkit.NewRegistry(t)
	o := testOptions(&sleeps{})
	subject, desc := pushSubject(t, reg.Host, o)
	dials := &egresstest.DialLog{}
	o.Transport = &http.Transport{DialContext: dials.Dial}
	if _, err := PushReferrers(context.Background(), subject, []v1.Image{artifact(t, desc, "x")}, o); err != nil {
		t.Fatal(err)
	}
	if len(dials.To("127.0.0.1")) == 0 {
		t.Error("the injected transport was not used")
	}
	bad := "169.254.169.254/team/app@" + desc.Digest.String()
	_, err := PushReferrers(context.Background(), bad, []v1.Image{artifact(t, desc, "x")}, o)
	assertFailure(t, err, failure.SourceForbidden, "refusing to connect")
	if !failure.IsPermanent(err) || len(dials.To("169.254.")) != 0 {
		t.Errorf("permanent = %v, dials %v; want a permanent refusal without dialling", failure.IsPermanent(err), dials.To("169.254."))
	}
}
