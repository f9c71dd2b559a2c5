package signing

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// goldenDigest is the digest testdata/simplesigning.golden was generated
// for with `cosign generate 127.0.0.1:5000/kiln/app@<digest>`.
var goldenDigest = v1.Hash{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}

func TestSimpleSigningMatchesCosign(t *testing.T) {
	want := bytes.TrimRight(readFixture(t, "simplesigning.golden"), "\n")
	got := SimpleSigning("127.0.0.1:5000/kiln/app", goldenDigest)
	if !bytes.Equal(got, want) {
		t.Fatalf("payload differs from cosign's\n got: %s\nwant: %s", got, want)
	}
}

// TestPAE uses the DSSE protocol's test vector.
func TestPAE(t *testing.T) {
	got := PAE("http://example.com/HelloWorld", []byte("hello world"))
	if want := "DSSEv1 29 http://example.com/HelloWorld 11 hello world"; string(got) != want {
		t.Fatalf("PAE = %q, want %q", got, want)
	}
	if got := PAE("", nil); string(got) != "DSSEv1 0  0 " {
		t.Fatalf("empty PAE = %q", got)
	}
	// Lengths count bytes, not runes.
	if got := PAE("t", []byte("é")); string(got) != "DSSEv1 1 t 2 é" {
		t.Fatalf("PAE = %q", got)
	}
}

func TestSignDSSE(t *testing.T) {
	k := fixtureKey(t)
	stmt := []byte(`{"_type":"https://in-toto.io/Statement/v1"}`)
	env, err := SignDSSE(k, InTotoPayloadType, stmt)
	if err != nil {
		t.Fatal(err)
	}
	// The JSON cosign writes: payload, payloadType, signatures, no keyid.
	if !bytes.HasPrefix(env, []byte(`{"payload":"eyJfdHlwZSI6`)) || !bytes.Contains(env, []byte(`,"payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"`)) || bytes.Contains(env, []byte("keyid")) {
		t.Fatalf("envelope shape: %s", env)
	}
	pt, payload, err := VerifyDSSE(k.Public(), env)
	if err != nil {
		t.Fatal(err)
	}
	if pt != InTotoPayloadType || !bytes.Equal(payload, stmt) {
		t.Fatalf("round trip: %q %q", pt, payload)
	}
	again, err := SignDSSE(k, InTotoPayloadType, stmt)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env, again) {
		t.Fatal("SignDSSE is not deterministic")
	}
	// The signature covers the payload type too.
	var e Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	e.PayloadType = "text/plain"
	swapped, _ := json.Marshal(e)
	if _, _, err := VerifyDSSE(k.Public(), swapped); err == nil {
		t.Fatal("an envelope with another payloadType verified")
	}
}

func TestCosignSignStatement(t *testing.T) {
	got := string(CosignSignStatement(goldenDigest))
	want := `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + goldenDigest.Hex + `"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}`
	if got != want {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
}

func TestCheckStatement(t *testing.T) {
	pt := "https://slsa.dev/provenance/v1"
	ok := `{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"x"}},{"name":"img","digest":{"sha256":"` + goldenDigest.Hex + `"}}],"predicateType":"` + pt + `","predicate":{"buildDefinition":{}}}`
	if err := checkStatement([]byte(ok), pt, goldenDigest); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ stmt, pt, want string }{
		"not JSON":       {"nope", pt, "not JSON"},
		"statement v0.1": {strings.Replace(ok, "Statement/v1", "Statement/v0.1", 1), pt, `_type is "https://in-toto.io/Statement/v0.1"`},
		"other type":     {ok, "https://spdx.dev/Document", `predicateType is "https://slsa.dev/provenance/v1", expected "https://spdx.dev/Document"`},
		"no type asked":  {ok, "", "expected \"\""},
		"other subject":  {strings.Replace(ok, goldenDigest.Hex, strings.Repeat("f", 64), 1), pt, "no subject with digest sha256:0123"},
		"no predicate":   {strings.Replace(ok, `"predicate":{"buildDefinition":{}}`, `"predicate":"x"`, 1), pt, "predicate is not a JSON object"},
	} {
		err := checkStatement([]byte(c.stmt), c.pt, goldenDigest)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
}
