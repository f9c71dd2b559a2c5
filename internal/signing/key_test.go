package signing

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// The fixtures, see testdata/README.md for how each was made.
const (
	fixtureSigstoreKey = "cosign.key"        // cosign v3.1.3 generate-key-pair
	fixtureCosignKey   = "cosign-legacy.key" // same algorithm, COSIGN header (older cosign)
	fixturePublicKey   = "cosign.pub"
	fixturePassword    = "cosign.password"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixturePasswordBytes(t testing.TB) []byte {
	return bytes.TrimRight(readFixture(t, fixturePassword), "\n")
}

// fixtureKey is the cosign-generated key every artifact test signs with.
func fixtureKey(t testing.TB) *Key {
	t.Helper()
	k, err := ParseKey(readFixture(t, fixtureSigstoreKey), fixturePasswordBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// encryptForTest is go-securesystemslib's encrypted.Encrypt (which cosign
// uses) written out: scrypt derives the secretbox key from the password.
func encryptForTest(t testing.TB, plain, password []byte, n int) []byte {
	t.Helper()
	salt := make([]byte, 32)
	nonce := make([]byte, 24)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	k, err := scrypt.Key(password, salt, n, 8, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	var nb [24]byte
	copy(key[:], k)
	copy(nb[:], nonce)
	var ek encryptedKey
	ek.KDF.Name = "scrypt"
	ek.KDF.Params.N, ek.KDF.Params.R, ek.KDF.Params.P = n, 8, 1
	ek.KDF.Salt = salt
	ek.Cipher.Name = "nacl/secretbox"
	ek.Cipher.Nonce = nonce
	ek.Ciphertext = secretbox.Seal(nil, plain, &nb, &key)
	b, err := json.Marshal(ek)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pemBlock(typ string, b []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})
}

func pkcs8(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseKeyReadsCosignKeys(t *testing.T) {
	pub, err := ParsePublicKey(readFixture(t, fixturePublicKey))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{fixtureSigstoreKey, fixtureCosignKey} {
		t.Run(name, func(t *testing.T) {
			pemBytes := readFixture(t, name)
			k, err := ParseKey(pemBytes, fixturePasswordBytes(t))
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			if !k.Public().Equal(pub) {
				t.Fatalf("the key's public half is not %s", fixturePublicKey)
			}
			if got := k.PublicKeyPEM(); !bytes.Equal(got, readFixture(t, fixturePublicKey)) {
				t.Fatalf("PublicKeyPEM differs from cosign's cosign.pub:\n%s", got)
			}
			sig, err := k.Sign([]byte("payload"))
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(pub, []byte("payload"), sig); err != nil {
				t.Fatal(err)
			}
			if err := Verify(pub, []byte("other payload"), sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("a signature verified over another payload: %v", err)
			}
		})
	}
}

func TestParseKeyHeaders(t *testing.T) {
	// The two fixtures differ in their PEM type, as cosign's do.
	for name, want := range map[string]string{fixtureSigstoreKey: SigstorePrivateKeyPEMType, fixtureCosignKey: CosignPrivateKeyPEMType} {
		b, _ := pem.Decode(readFixture(t, name))
		if b == nil || b.Type != want {
			t.Errorf("%s: PEM type %v, want %q", name, b, want)
		}
	}
}

func TestParseKeyUnencryptedPKCS8(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(pemBlock(PKCS8PrivateKeyPEMType, pkcs8(t, priv)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Public().Equal(&priv.PublicKey) {
		t.Fatal("wrong key")
	}
}

func TestParseKeyErrors(t *testing.T) {
	password := fixturePasswordBytes(t)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	encrypted := func(plain []byte) []byte {
		return pemBlock(SigstorePrivateKeyPEMType, encryptForTest(t, plain, password, 1<<15))
	}
	// mutate decodes the fixture's JSON, lets f change it and re-encodes.
	mutate := func(f func(m map[string]any)) []byte {
		b, _ := pem.Decode(readFixture(t, fixtureSigstoreKey))
		var m map[string]any
		if err := json.Unmarshal(b.Bytes, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return pemBlock(SigstorePrivateKeyPEMType, out)
	}
	sub := func(m map[string]any, k string) map[string]any { return m[k].(map[string]any) }

	cases := []struct {
		name     string
		pem      []byte
		password []byte
		reason   Reason
		detail   string
	}{
		{"wrong password", readFixture(t, fixtureSigstoreKey), []byte("not the password"), WrongPassword, ""},
		{"empty password", readFixture(t, fixtureCosignKey), nil, WrongPassword, ""},
		{"not PEM", []byte("cosign.key"), password, KeyInvalid, "no PEM block"},
		{"public key", readFixture(t, fixturePublicKey), password, KeyInvalid, `"PUBLIC KEY" is not a cosign private key`},
		{"EC PRIVATE KEY", pemBlock("EC PRIVATE KEY", []byte{1, 2, 3}), password, KeyInvalid, `"EC PRIVATE KEY"`},
		{"not JSON", pemBlock(SigstorePrivateKeyPEMType, []byte("{not json")), password, KeyInvalid, "not the JSON cosign writes"},
		{"kdf", mutate(func(m map[string]any) { sub(m, "kdf")["name"] = "pbkdf2" }), password, KeyInvalid, `"pbkdf2" is not supported`},
		{"scrypt N too costly", mutate(func(m map[string]any) { sub(sub(m, "kdf"), "params")["N"] = 1 << 22 }), password, KeyInvalid, "N=4194304"},
		{"scrypt r", mutate(func(m map[string]any) { sub(sub(m, "kdf"), "params")["r"] = 16 }), password, KeyInvalid, "r=16"},
		{"empty salt", mutate(func(m map[string]any) { sub(m, "kdf")["salt"] = "" }), password, KeyInvalid, "salt is empty"},
		{"cipher", mutate(func(m map[string]any) { sub(m, "cipher")["name"] = "aes-gcm" }), password, KeyInvalid, `"aes-gcm" is not supported`},
		{"nonce", mutate(func(m map[string]any) { sub(m, "cipher")["nonce"] = "AAAA" }), password, KeyInvalid, "nonce is 3 bytes"},
		{"ciphertext cut", mutate(func(m map[string]any) { m["ciphertext"] = "AAAA" }), password, KeyInvalid, "shorter than the secretbox tag"},
		{"ciphertext flipped", mutate(func(m map[string]any) {
			c, _ := base64.StdEncoding.DecodeString(m["ciphertext"].(string))
			c[len(c)/2] ^= 1
			m["ciphertext"] = base64.StdEncoding.EncodeToString(c)
		}), password, WrongPassword, ""},
		{"not PKCS8 inside", encrypted([]byte("hello")), password, KeyInvalid, "not PKCS #8"},
		{"P-384", encrypted(pkcs8(t, p384)), password, KeyInvalid, "ECDSA P-384, expected ECDSA P-256"},
		{"Ed25519", encrypted(pkcs8(t, ed)), password, KeyInvalid, "Ed25519, expected ECDSA P-256"},
		{"RSA", encrypted(pkcs8(t, rsaKey)), password, KeyInvalid, "RSA, expected ECDSA P-256"},
		{"P-256 unencrypted but truncated", pemBlock(PKCS8PrivateKeyPEMType, pkcs8(t, p256)[:40]), nil, KeyInvalid, "not PKCS #8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := ParseKey(c.pem, c.password)
			if err == nil {
				t.Fatalf("ParseKey accepted it: %v", k)
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("error %T %v is not a *KeyError", err, err)
			}
			if ke.Reason != c.reason {
				t.Fatalf("reason %s, want %s (%v)", ke.Reason, c.reason, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.detail) {
				t.Fatalf("error %q does not say %q", msg, c.detail)
			}
			// Neither the password nor any piece of the key file shows.
			if len(c.password) > 0 && strings.Contains(msg, string(c.password)) {
				t.Fatalf("error %q contains the password", msg)
			}
			if b, _ := pem.Decode(c.pem); b != nil && len(b.Bytes) >= 8 {
				for _, piece := range []string{string(b.Bytes[len(b.Bytes)-8:]), base64.StdEncoding.EncodeToString(b.Bytes)[:12]} {
					if strings.Contains(msg, piece) {
						t.Fatalf("error %q contains key bytes %q", msg, piece)
					}
				}
			}
		})
	}
}

func TestKeyStringHidesThePrivateScalar(t *testing.T) {
	k := fixtureKey(t)
	d := k.priv.D.Text(10)
	dh := k.priv.D.Text(16)
	for _, s := range []string{k.String(), fmt.Sprintf("%v", k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k), fmt.Sprint(k)} {
		if strings.Contains(s, d) || strings.Contains(s, dh) {
			t.Fatalf("%q shows the private key", s)
		}
		if !strings.Contains(s, k.Hint()) {
			t.Fatalf("%q does not name the key by its hint", s)
		}
	}
}

func TestSignIsDeterministic(t *testing.T) {
	k := fixtureKey(t)
	a, err := k.Sign([]byte("same payload"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		b, err := k.Sign([]byte("same payload"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("signature %d differs:\n%x\n%x", i, a, b)
		}
	}
	// Parsing the same key again (a fresh *ecdsa.PrivateKey) changes nothing.
	again, err := fixtureKey(t).Sign([]byte("same payload"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, again) {
		t.Fatal("a re-parsed key signs differently")
	}
	other, err := k.Sign([]byte("other payload"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, other) {
		t.Fatal("two payloads gave one signature")
	}
}

// TestSignRFC6979Vectors pins the nonce derivation to RFC 6979 A.2.5
// (P-256, SHA-256): with the RFC's key the signatures of "sample" and
// "test" are exactly the RFC's (r, s).
func TestSignRFC6979Vectors(t *testing.T) {
	d, _ := hex.DecodeString("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		t.Fatal(err)
	}
	k, err := newKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	wantUx := "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
	if got := fmt.Sprintf("%064X", priv.X); got != wantUx {
		t.Fatalf("public Ux %s, want %s", got, wantUx)
	}
	for _, v := range []struct{ msg, r, s string }{
		{"sample", "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716", "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"},
		{"test", "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367", "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083"},
	} {
		sig, err := k.Sign([]byte(v.msg))
		if err != nil {
			t.Fatal(err)
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(sig, &rs); err != nil {
			t.Fatalf("%s: not ASN.1 DER: %v", v.msg, err)
		}
		if got := fmt.Sprintf("%064X", rs.R); got != v.r {
			t.Errorf("%s: r = %s, want %s", v.msg, got, v.r)
		}
		if got := fmt.Sprintf("%064X", rs.S); got != v.s {
			t.Errorf("%s: s = %s, want %s", v.msg, got, v.s)
		}
	}
}

func TestParsePublicKeyErrors(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{
		"empty":       nil,
		"private key": readFixture(t, fixtureSigstoreKey),
		"garbage":     pemBlock("PUBLIC KEY", []byte{1, 2, 3}),
		"P-384":       pemBlock("PUBLIC KEY", der),
	} {
		var ke *KeyError
		if _, err := ParsePublicKey(in); !errors.As(err, &ke) || ke.Reason != KeyInvalid {
			t.Errorf("%s: %v, want a KeyInvalid *KeyError", name, err)
		}
	}
}
