package signing

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/internal/testkit"
)

var testSubject = v1.Descriptor{
	MediaType:   types.OCIManifestSchema1,
	Size:        1234,
	Digest:      goldenDigest,
	Annotations: map[string]string{"not": "copied"},
	Platform:    &v1.Platform{OS: "linux", Architecture: "amd64"},
}

var testCreated = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))

func provenanceStatement(subject v1.Hash) []byte {
	return []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"127.0.0.1:5000/kiln/app","digest":{"sha256":"` + subject.Hex + `"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://kiln.dev/ImageBuild/v1"}}}`)
}

func layerBytes(t *testing.T, img v1.Image, i int) []byte {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return testkit.ReadAll(t, ls[i].Compressed)
}

// checkImage validates the manifest and that every blob hashes to its
// descriptor. (validate.Image's full mode wants config diff_ids only for
// tar layers, while cosign's .sig/.att configs list them for their JSON
// layers too, so the layer bytes are checked here.)
func checkImage(t *testing.T, img v1.Image) {
	t.Helper()
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Fatalf("not a valid image: %v", err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if h, n, _ := v1.SHA256(bytes.NewReader(cfg)); h != m.Config.Digest || n != m.Config.Size {
		t.Fatalf("config is %s (%d bytes), manifest says %s (%d)", h, n, m.Config.Digest, m.Config.Size)
	}
	for i, d := range m.Layers {
		b := layerBytes(t, img, i)
		if h, n, _ := v1.SHA256(bytes.NewReader(b)); h != d.Digest || n != d.Size {
			t.Fatalf("layer %d is %s (%d bytes), manifest says %s (%d)", i, h, n, d.Digest, d.Size)
		}
	}
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkBundleReferrer checks the manifest cosign v3 writes around a bundle
// and returns the envelope inside, verified with key.
func checkBundleReferrer(t *testing.T, img v1.Image, key *Key, predicateType string) Envelope {
	t.Helper()
	checkImage(t, img)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.ArtifactType != BundleMediaType {
		t.Fatalf("manifest media type %q artifactType %q", m.MediaType, m.ArtifactType)
	}
	if m.Config.MediaType != EmptyMediaType || m.Config.Size != 2 || m.Config.Digest.String() != "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" || m.Config.ArtifactType != BundleMediaType {
		t.Fatalf("config %+v is not the empty descriptor", m.Config)
	}
	want := v1.Descriptor{MediaType: testSubject.MediaType, Size: testSubject.Size, Digest: testSubject.Digest}
	if m.Subject == nil || m.Subject.MediaType != want.MediaType || m.Subject.Size != want.Size || m.Subject.Digest != want.Digest || m.Subject.Annotations != nil || m.Subject.Platform != nil {
		t.Fatalf("subject %+v, want %+v", m.Subject, want)
	}
	if m.Annotations[AnnotationBundleContent] != "dsse-envelope" || m.Annotations[AnnotationBundlePredicateType] != predicateType {
		t.Fatalf("annotations %v", m.Annotations)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != BundleMediaType {
		t.Fatalf("layers %+v", m.Layers)
	}
	var b struct {
		MediaType            string `json:"mediaType"`
		VerificationMaterial struct {
			PublicKey struct {
				Hint string `json:"hint"`
			} `json:"publicKey"`
		} `json:"verificationMaterial"`
		DSSEEnvelope json.RawMessage `json:"dsseEnvelope"`
	}
	raw := layerBytes(t, img, 0)
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	if b.MediaType != BundleMediaType || b.VerificationMaterial.PublicKey.Hint != key.Hint() {
		t.Fatalf("bundle %s", raw)
	}
	pt, payload, err := VerifyDSSE(key.Public(), b.DSSEEnvelope)
	if err != nil {
		t.Fatal(err)
	}
	if pt != InTotoPayloadType {
		t.Fatalf("payloadType %q", pt)
	}
	if err := checkStatement(payload, predicateType, testSubject.Digest); err != nil {
		t.Fatal(err)
	}
	var env Envelope
	if err := json.Unmarshal(b.DSSEEnvelope, &env); err != nil {
		t.Fatal(err)
	}
	return env
}

func TestSignatureArtifactBundle(t *testing.T) {
	k := fixtureKey(t)
	img, err := SignatureArtifact(k, testSubject, "", FormatBundle, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	env := checkBundleReferrer(t, img, k, CosignSignPredicateType)
	if !bytes.Equal(env.Payload, CosignSignStatement(testSubject.Digest)) {
		t.Fatalf("payload %s", env.Payload)
	}
	m, _ := img.Manifest()
	if got := m.Annotations[AnnotationCreated]; got != "2026-01-02T02:04:05Z" {
		t.Fatalf("created annotation %q, want the created argument in UTC", got)
	}

	// Same inputs, same digest; the time and the key change it.
	again, err := SignatureArtifact(fixtureKey(t), testSubject, "", FormatBundle, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, img) != mustDigest(t, again) {
		t.Fatal("the bundle referrer is not reproducible")
	}
	undated, err := SignatureArtifact(k, testSubject, "", FormatBundle, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := undated.Manifest(); m.Annotations[AnnotationCreated] != "" {
		t.Fatalf("a zero created time wrote %q", m.Annotations[AnnotationCreated])
	}
	other := otherKey(t)
	rotated, err := SignatureArtifact(other, testSubject, "", FormatBundle, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, rotated) == mustDigest(t, img) {
		t.Fatal("another key gave the same referrer")
	}
	checkBundleReferrer(t, rotated, other, CosignSignPredicateType)
}

func otherKey(t *testing.T) *Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := newKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestAttestationArtifactBundle(t *testing.T) {
	k := fixtureKey(t)
	stmt := provenanceStatement(testSubject.Digest)
	img, err := AttestationArtifact(k, testSubject, stmt, "https://slsa.dev/provenance/v1", FormatBundle, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	env := checkBundleReferrer(t, img, k, "https://slsa.dev/provenance/v1")
	if !bytes.Equal(env.Payload, stmt) {
		t.Fatal("the statement was not signed byte for byte")
	}
	again, err := AttestationArtifact(k, testSubject, stmt, "https://slsa.dev/provenance/v1", FormatBundle, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, img) != mustDigest(t, again) {
		t.Fatal("the attestation referrer is not reproducible")
	}
}

func TestSignatureArtifactLegacy(t *testing.T) {
	k := fixtureKey(t)
	img, err := SignatureArtifact(k, testSubject, "127.0.0.1:5000/kiln/app", FormatLegacy, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || m.Subject != nil {
		t.Fatalf("manifest %+v", m)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != SimpleSigningMediaType {
		t.Fatalf("layers %+v", m.Layers)
	}
	payload := layerBytes(t, img, 0)
	if !bytes.Equal(payload, SimpleSigning("127.0.0.1:5000/kiln/app", testSubject.Digest)) {
		t.Fatalf("payload %s", payload)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Layers[0].Annotations[AnnotationSignature])
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(k.Public(), payload, sig); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cfg), "2026") {
		t.Fatalf("the legacy config carries a time: %s", cfg)
	}
	again, err := SignatureArtifact(k, testSubject, "127.0.0.1:5000/kiln/app", FormatLegacy, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, img) != mustDigest(t, again) {
		t.Fatal("the .sig image is not reproducible")
	}
	if _, err := SignatureArtifact(k, testSubject, "", FormatLegacy, testCreated); err == nil || !strings.Contains(err.Error(), "docker-reference") {
		t.Fatalf("no docker reference: %v", err)
	}
}

func TestAttestationArtifactLegacy(t *testing.T) {
	k := fixtureKey(t)
	stmt := provenanceStatement(testSubject.Digest)
	img, err := AttestationArtifact(k, testSubject, stmt, "https://slsa.dev/provenance/v1", FormatLegacy, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img)
	m, _ := img.Manifest()
	if len(m.Layers) != 1 || m.Layers[0].MediaType != DSSEMediaType {
		t.Fatalf("layers %+v", m.Layers)
	}
	ann := m.Layers[0].Annotations
	if ann[AnnotationPredicateType] != "https://slsa.dev/provenance/v1" {
		t.Fatalf("annotations %v", ann)
	}
	if sig, ok := ann[AnnotationSignature]; !ok || sig != "" {
		t.Fatalf("cosign writes an empty signature annotation on attestations, got %q %v", sig, ok)
	}
	_, payload, err := VerifyDSSE(k.Public(), layerBytes(t, img, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(payload, stmt) {
		t.Fatal("payload differs")
	}
}

func TestArtifactInputErrors(t *testing.T) {
	k := fixtureKey(t)
	stmt := provenanceStatement(testSubject.Digest)
	sha512 := testSubject
	sha512.Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("a", 128)}
	noSize := testSubject
	noSize.Size = 0
	noType := testSubject
	noType.MediaType = ""
	for name, f := range map[string]func() error{
		"nil key": func() error {
			_, err := SignatureArtifact(nil, testSubject, "r", FormatBundle, testCreated)
			return err
		},
		"sha512 subject": func() error { _, err := SignatureArtifact(k, sha512, "r", FormatBundle, testCreated); return err },
		"no size":        func() error { _, err := SignatureArtifact(k, noSize, "r", FormatLegacy, testCreated); return err },
		"no media type": func() error {
			_, err := AttestationArtifact(k, noType, stmt, "https://slsa.dev/provenance/v1", FormatBundle, testCreated)
			return err
		},
		"format": func() error { _, err := SignatureArtifact(k, testSubject, "r", "cosign", testCreated); return err },
		"attest format": func() error {
			_, err := AttestationArtifact(k, testSubject, stmt, "https://slsa.dev/provenance/v1", "", testCreated)
			return err
		},
		"predicate type": func() error {
			_, err := AttestationArtifact(k, testSubject, stmt, "https://spdx.dev/Document", FormatBundle, testCreated)
			return err
		},
		"subject mismatch": func() error {
			_, err := AttestationArtifact(k, testSubject, provenanceStatement(v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("e", 64)}), "https://slsa.dev/provenance/v1", FormatLegacy, testCreated)
			return err
		},
	} {
		if err := f(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLegacyTags(t *testing.T) {
	if got := SignatureTag(goldenDigest); got != "sha256-"+goldenDigest.Hex+".sig" {
		t.Fatal(got)
	}
	if got := AttestationTag(goldenDigest); got != "sha256-"+goldenDigest.Hex+".att" {
		t.Fatal(got)
	}
}

func TestAppendLegacy(t *testing.T) {
	k := fixtureKey(t)
	sig := func(key *Key, ref string) v1.Image {
		img, err := SignatureArtifact(key, testSubject, ref, FormatLegacy, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	ours := sig(k, "127.0.0.1:5000/kiln/app")
	theirs := sig(otherKey(t), "127.0.0.1:5000/kiln/app")

	first, err := AppendLegacy(nil, ours)
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, first) != mustDigest(t, ours) {
		t.Fatal("appending to nothing changed the image")
	}
	same, err := AppendLegacy(first, sig(k, "127.0.0.1:5000/kiln/app"))
	if err != nil {
		t.Fatal(err)
	}
	if same != first {
		t.Fatal("re-signing the same content did not return the existing image")
	}

	// Someone else signed first: their signature stays, ours follows.
	merged, err := AppendLegacy(theirs, ours)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, merged)
	m, _ := merged.Manifest()
	tm, _ := theirs.Manifest()
	om, _ := ours.Manifest()
	if len(m.Layers) != 2 || m.Layers[0].Digest != tm.Layers[0].Digest || m.Layers[1].Digest != om.Layers[0].Digest {
		t.Fatalf("merged layers %+v", m.Layers)
	}
	if m.Layers[0].Annotations[AnnotationSignature] != tm.Layers[0].Annotations[AnnotationSignature] ||
		m.Layers[1].Annotations[AnnotationSignature] != om.Layers[0].Annotations[AnnotationSignature] {
		t.Fatal("signature annotations were not kept")
	}
	// Both signatures sign the same payload (one layer digest twice, as
	// cosign has it): only the annotation tells them apart, and appending
	// theirs again adds nothing.
	withOther, err := AppendLegacy(merged, theirs)
	if err != nil {
		t.Fatal(err)
	}
	if withOther != merged {
		t.Fatal("their signature was appended twice")
	}
	// Reproducible: the same merge twice gives one digest.
	again, err := AppendLegacy(theirs, sig(k, "127.0.0.1:5000/kiln/app"))
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, again) != mustDigest(t, merged) {
		t.Fatal("merging is not reproducible")
	}

	// Attestations merge the same way, each predicate type its own layer.
	att := func(stmt []byte, pt string) v1.Image {
		img, err := AttestationArtifact(k, testSubject, stmt, pt, FormatLegacy, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	spdx := []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + goldenDigest.Hex + `"}}],"predicateType":"https://spdx.dev/Document","predicate":{"spdxVersion":"SPDX-2.3"}}`)
	atts, err := AppendLegacy(att(provenanceStatement(goldenDigest), "https://slsa.dev/provenance/v1"), att(spdx, "https://spdx.dev/Document"))
	if err != nil {
		t.Fatal(err)
	}
	am, _ := atts.Manifest()
	if len(am.Layers) != 2 || am.Layers[0].Annotations[AnnotationPredicateType] != "https://slsa.dev/provenance/v1" || am.Layers[1].Annotations[AnnotationPredicateType] != "https://spdx.dev/Document" {
		t.Fatalf("attestation layers %+v", am.Layers)
	}
}
