package signing

import (
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Media and payload types of cosign's wire formats.
const (
	// InTotoPayloadType is the DSSE payloadType of an in-toto Statement.
	InTotoPayloadType = "application/vnd.in-toto+json"
	// InTotoStatementType is the _type of an in-toto Statement v1.
	InTotoStatementType = "https://in-toto.io/Statement/v1"
	// CosignSignPredicateType is the predicate of the statement that
	// `cosign sign` signs in the bundle format (cosign v3 pkg/types):
	// there a signature is a DSSE envelope, not a bare message signature.
	CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"
	// simpleSigningType is critical.type of a legacy cosign signature
	// payload (sigstore/sigstore pkg/signature/payload).
	simpleSigningType = "cosign container image signature"
)

// SimpleSigning returns the payload a legacy cosign signature signs, byte
// for byte what `cosign sign --new-bundle-format=false` (and `cosign
// generate`) produces with no annotations:
//
//	{"critical":{"identity":{"docker-reference":REF},"image":{"docker-manifest-digest":DIGEST},"type":"cosign container image signature"},"optional":null}
//
// dockerReference is the repository without tag or digest, as cosign
// writes it by default (name.Repository.Name(), e.g. "registry:5000/app").
func SimpleSigning(dockerReference string, manifestDigest v1.Hash) []byte {
	return []byte(`{"critical":{"identity":{"docker-reference":` + jsonString(dockerReference) +
		`},"image":{"docker-manifest-digest":` + jsonString(manifestDigest.String()) +
		`},"type":` + jsonString(simpleSigningType) + `},"optional":null}`)
}

// jsonString is s as a JSON string, escaped as encoding/json escapes it
// (which is what cosign's payload went through). Marshalling a string
// cannot fail.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// PAE is DSSE's pre-authentication encoding, what a DSSE signature signs:
// "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in ASCII
// decimal (DSSE protocol v1).
func PAE(payloadType string, payload []byte) []byte {
	out := make([]byte, 0, len("DSSEv1 ")+len(payloadType)+len(payload)+24)
	out = append(out, "DSSEv1 "...)
	out = strconv.AppendInt(out, int64(len(payloadType)), 10)
	out = append(out, ' ')
	out = append(out, payloadType...)
	out = append(out, ' ')
	out = strconv.AppendInt(out, int64(len(payload)), 10)
	out = append(out, ' ')
	return append(out, payload...)
}

// Envelope is a DSSE envelope in the JSON form cosign reads and writes:
// []byte fields are standard base64, field order as sigstore's protobuf
// Go type (payload, payloadType, signatures), keyid omitted when empty as
// cosign leaves it.
type Envelope struct {
	Payload     []byte              `json:"payload"`
	PayloadType string              `json:"payloadType"`
	Signatures  []EnvelopeSignature `json:"signatures"`
}

// EnvelopeSignature is one DSSE signature.
type EnvelopeSignature struct {
	Sig   []byte `json:"sig"`
	KeyID string `json:"keyid,omitempty"`
}

// SignEnvelope signs payload as DSSE: the signature is over
// PAE(payloadType, payload).
func SignEnvelope(key *Key, payloadType string, payload []byte) (Envelope, error) {
	sig, err := key.Sign(PAE(payloadType, payload))
	if err != nil {
		return Envelope{}, err
	}
	return Envelope{Payload: payload, PayloadType: payloadType, Signatures: []EnvelopeSignature{{Sig: sig}}}, nil
}

// SignDSSE returns the JSON of a DSSE envelope over payload, one signature,
// keyid "" (omitted) as cosign writes it.
func SignDSSE(key *Key, payloadType string, payload []byte) ([]byte, error) {
	env, err := SignEnvelope(key, payloadType, payload)
	if err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// VerifyDSSE checks every signature of an envelope's JSON against pub and
// returns the payload.
func VerifyDSSE(pub *ecdsa.PublicKey, envelopeJSON []byte) (payloadType string, payload []byte, err error) {
	var env Envelope
	if err := json.Unmarshal(envelopeJSON, &env); err != nil {
		return "", nil, fmt.Errorf("decoding the DSSE envelope: %w", err)
	}
	if len(env.Signatures) == 0 {
		return "", nil, fmt.Errorf("the DSSE envelope has no signature")
	}
	for i, s := range env.Signatures {
		if err := Verify(pub, PAE(env.PayloadType, env.Payload), s.Sig); err != nil {
			return "", nil, fmt.Errorf("DSSE signature %d: %w", i, err)
		}
	}
	return env.PayloadType, env.Payload, nil
}

// resourceDigest is an in-toto ResourceDescriptor as far as kiln reads it.
type resourceDigest struct {
	Name   string            `json:"name,omitempty"`
	Digest map[string]string `json:"digest"`
}

// CosignSignStatement is the in-toto statement `cosign sign` signs in the
// bundle format: the image digest as the only subject (no name, as cosign
// writes it) and an empty predicate of type CosignSignPredicateType.
func CosignSignStatement(subject v1.Hash) []byte {
	return []byte(`{"_type":` + jsonString(InTotoStatementType) +
		`,"subject":[{"digest":{` + jsonString(subject.Algorithm) + `:` + jsonString(subject.Hex) + `}}]` +
		`,"predicateType":` + jsonString(CosignSignPredicateType) + `,"predicate":{}}`)
}

// checkStatement fails unless stmt is an in-toto Statement v1 of
// predicateType with subject among its subjects: cosign matches an
// attestation to an image by exactly these fields, so anything else would
// be pushed and then never verify.
func checkStatement(stmt []byte, predicateType string, subject v1.Hash) error {
	var st struct {
		Type          string           `json:"_type"`
		Subject       []resourceDigest `json:"subject"`
		PredicateType string           `json:"predicateType"`
		Predicate     json.RawMessage  `json:"predicate"`
	}
	if err := json.Unmarshal(stmt, &st); err != nil {
		return fmt.Errorf("the statement is not JSON: %w", err)
	}
	if st.Type != InTotoStatementType {
		return fmt.Errorf("the statement _type is %q, expected %q", st.Type, InTotoStatementType)
	}
	if predicateType == "" || st.PredicateType != predicateType {
		return fmt.Errorf("the statement predicateType is %q, expected %q", st.PredicateType, predicateType)
	}
	if len(st.Predicate) == 0 || st.Predicate[0] != '{' {
		return fmt.Errorf("the statement predicate is not a JSON object")
	}
	for _, s := range st.Subject {
		if s.Digest[subject.Algorithm] == subject.Hex {
			return nil
		}
	}
	return fmt.Errorf("the statement has no subject with digest %s", subject)
}
