package signing

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// The goldens in testdata/cosign-v3.1.3 are what cosign v3.1.3 itself
// pushed when signing and attesting an image with testdata/cosign.key
// (see testdata/README.md). cosign's ECDSA signatures are randomized, so
// the tests feed cosign's own signature bytes into this package's
// builders and require cosign's exact bytes back: every byte this package
// adds around a signature is then the byte cosign writes.

func golden(t *testing.T, name string) []byte {
	t.Helper()
	return readFixture(t, "cosign-v3.1.3/"+name)
}

func goldenManifest(t *testing.T, name string) (*v1.Manifest, []byte) {
	t.Helper()
	raw := golden(t, name)
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return m, raw
}

func TestBundleReferrerIsCosigns(t *testing.T) {
	for _, kind := range []string{"sign", "attest"} {
		t.Run(kind, func(t *testing.T) {
			m, want := goldenManifest(t, kind+"-referrer.json")
			created, err := time.Parse(time.RFC3339, m.Annotations[AnnotationCreated])
			if err != nil {
				t.Fatal(err)
			}
			img, err := bundleReferrer(golden(t, kind+"-bundle.json"), *m.Subject, m.Annotations[AnnotationBundlePredicateType], created)
			if err != nil {
				t.Fatal(err)
			}
			got, err := img.RawManifest()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("referrer manifest differs from cosign's\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestBundleIsCosigns compares the bundle JSON by value (cosign writes it
// with protojson, whose spacing is deliberately unstable) and checks that
// cosign's DSSE signature verifies under this package's PAE.
func TestBundleIsCosigns(t *testing.T) {
	k := fixtureKey(t)
	for _, kind := range []string{"sign", "attest"} {
		t.Run(kind, func(t *testing.T) {
			var theirs map[string]any
			if err := json.Unmarshal(golden(t, kind+"-bundle.json"), &theirs); err != nil {
				t.Fatal(err)
			}
			env, err := json.Marshal(theirs["dsseEnvelope"])
			if err != nil {
				t.Fatal(err)
			}
			_, payload, err := VerifyDSSE(k.Public(), env)
			if err != nil {
				t.Fatalf("cosign's envelope does not verify here: %v", err)
			}
			b, err := Bundle(k, payload)
			if err != nil {
				t.Fatal(err)
			}
			var ours map[string]any
			if err := json.Unmarshal(b, &ours); err != nil {
				t.Fatal(err)
			}
			// Everything but the (randomized) signature is equal.
			for _, m := range []map[string]any{theirs, ours} {
				sigs := m["dsseEnvelope"].(map[string]any)["signatures"].([]any)
				if len(sigs) != 1 {
					t.Fatalf("%d signatures", len(sigs))
				}
				sigs[0].(map[string]any)["sig"] = "…"
			}
			if !reflect.DeepEqual(ours, theirs) {
				t.Fatalf("bundle differs from cosign's\n ours %v\ntheirs %v", ours, theirs)
			}
		})
	}
}

// TestCosignSignStatementIsCosigns: cosign sign's statement, by value. The
// one difference is cosign's empty subject "annotations" object, which
// protojson writes for an empty map and which means nothing.
func TestCosignSignStatementIsCosigns(t *testing.T) {
	var b struct {
		DSSEEnvelope Envelope `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(golden(t, "sign-bundle.json"), &b); err != nil {
		t.Fatal(err)
	}
	m, _ := goldenManifest(t, "sign-referrer.json")
	var theirs, ours map[string]any
	if err := json.Unmarshal(b.DSSEEnvelope.Payload, &theirs); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(CosignSignStatement(m.Subject.Digest), &ours); err != nil {
		t.Fatal(err)
	}
	subj := theirs["subject"].([]any)[0].(map[string]any)
	if ann, ok := subj["annotations"].(map[string]any); !ok || len(ann) != 0 {
		t.Fatalf("cosign's subject annotations: %v", subj["annotations"])
	}
	delete(subj, "annotations")
	if !reflect.DeepEqual(ours, theirs) {
		t.Fatalf("statement differs from cosign's\n ours %v\ntheirs %v", ours, theirs)
	}
}

func TestLegacySignatureImageIsCosigns(t *testing.T) {
	k := fixtureKey(t)
	m, want := goldenManifest(t, "sig-manifest.json")
	payload := golden(t, "sig-layer.json")
	b64 := m.Layers[0].Annotations[AnnotationSignature]
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(k.Public(), payload, sig); err != nil {
		t.Fatalf("cosign's signature does not verify here: %v", err)
	}
	// The payload is SimpleSigning's for that repository and digest.
	var p simpleContainerImage
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	d, err := v1.NewHash(p.Critical.Image.DockerManifestDigest)
	if err != nil {
		t.Fatal(err)
	}
	if got := SimpleSigning(p.Critical.Identity.DockerReference, d); !bytes.Equal(got, payload) {
		t.Fatalf("payload differs\n got %s\nwant %s", got, payload)
	}
	a, err := addendum(newBlob(payload, SimpleSigningMediaType), map[string]string{AnnotationSignature: b64})
	if err != nil {
		t.Fatal(err)
	}
	checkLegacyBytes(t, []mutate.Addendum{a}, want, golden(t, "sig-config.json"))
}

func TestLegacyAttestationImageIsCosigns(t *testing.T) {
	k := fixtureKey(t)
	m, want := goldenManifest(t, "att-manifest.json")
	layer := golden(t, "att-layer.json")
	_, payload, err := VerifyDSSE(k.Public(), layer)
	if err != nil {
		t.Fatalf("cosign's envelope does not verify here: %v", err)
	}
	// Envelope's JSON encoding is cosign's, byte for byte.
	var env Envelope
	if err := json.Unmarshal(layer, &env); err != nil {
		t.Fatal(err)
	}
	if again, _ := json.Marshal(env); !bytes.Equal(again, layer) {
		t.Fatalf("envelope encoding differs\n got %s\nwant %s", again, layer)
	}
	if !bytes.Equal(env.Payload, payload) {
		t.Fatal("payload")
	}
	a, err := addendum(newBlob(layer, DSSEMediaType), map[string]string{
		AnnotationSignature:     "",
		AnnotationPredicateType: m.Layers[0].Annotations[AnnotationPredicateType],
	})
	if err != nil {
		t.Fatal(err)
	}
	checkLegacyBytes(t, []mutate.Addendum{a}, want, golden(t, "att-config.json"))
}

func checkLegacyBytes(t *testing.T, adds []mutate.Addendum, wantManifest, wantConfig []byte) {
	t.Helper()
	img, err := legacyImage(adds)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cfg, wantConfig) {
		t.Fatalf("config differs from cosign's\n got %s\nwant %s", cfg, wantConfig)
	}
	got, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantManifest) {
		t.Fatalf("manifest differs from cosign's\n got %s\nwant %s", got, wantManifest)
	}
}

// The simple-signing payload as sigstore's payload.SimpleContainerImage
// declares it, to read cosign's golden.
type simpleContainerImage struct {
	Critical critical       `json:"critical"`
	Optional map[string]any `json:"optional"`
}

type critical struct {
	Identity identity `json:"identity"`
	Image    image    `json:"image"`
	Type     string   `json:"type"`
}

type identity struct {
	DockerReference string `json:"docker-reference"`
}

type image struct {
	DockerManifestDigest string `json:"docker-manifest-digest"`
}
