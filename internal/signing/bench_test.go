package signing

import (
	"testing"
	"time"
)

// BenchmarkParseKey is dominated by scrypt (N=2^16, r=8: 64 MiB and most
// of the time): what decrypting a cosign key costs per call, and why a
// caller parses a key once per Secret version, not once per image.
func BenchmarkParseKey(b *testing.B) {
	pemBytes, pw := readFixture(b, fixtureSigstoreKey), fixturePasswordBytes(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseKey(pemBytes, pw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignatureArtifact is one deterministic ECDSA signature plus the
// bundle referrer around it.
func BenchmarkSignatureArtifact(b *testing.B) {
	k := fixtureKey(b)
	created := time.Unix(0, 0)
	b.ReportAllocs()
	for b.Loop() {
		img, err := SignatureArtifact(k, testSubject, "", FormatBundle, created)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := img.Digest(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttestationArtifactLegacy signs a 1 MiB statement (an SBOM of a
// few thousand files) into a .att image.
func BenchmarkAttestationArtifactLegacy(b *testing.B) {
	k := fixtureKey(b)
	pred := make([]byte, 1<<20)
	for i := range pred {
		pred[i] = 'a'
	}
	stmt := []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + testSubject.Digest.Hex + `"}}],"predicateType":"https://spdx.dev/Document","predicate":{"x":"` + string(pred) + `"}}`)
	b.SetBytes(int64(len(stmt)))
	b.ReportAllocs()
	for b.Loop() {
		img, err := AttestationArtifact(k, testSubject, stmt, "https://spdx.dev/Document", FormatLegacy, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := img.Digest(); err != nil {
			b.Fatal(err)
		}
	}
}
