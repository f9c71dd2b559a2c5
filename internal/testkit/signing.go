package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// SigningKey returns a fresh ECDSA P-256 key pair as an unencrypted PKCS #8
// "PRIVATE KEY" PEM (which internal/signing reads with any password) and
// its "PUBLIC KEY" PEM. Tests of what kiln does with a key use it; the
// cosign-encrypted format is tested with the fixtures made by the cosign
// CLI in internal/signing/testdata.
func SigningKey(t testing.TB) (private, public []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
}
