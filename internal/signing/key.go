package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// PEM block types of cosign's private keys. cosign v2+ writes SIGSTORE;
// keys made by older releases say COSIGN; the content is the same.
const (
	SigstorePrivateKeyPEMType = "ENCRYPTED SIGSTORE PRIVATE KEY"
	CosignPrivateKeyPEMType   = "ENCRYPTED COSIGN PRIVATE KEY"
	// PKCS8PrivateKeyPEMType is an unencrypted PKCS #8 key (what
	// `openssl genpkey` writes). Accepted because it costs nothing: the
	// same parser reads what the encrypted forms wrap.
	PKCS8PrivateKeyPEMType = "PRIVATE KEY"
	publicKeyPEMType       = "PUBLIC KEY"
)

// Reason says why a key was rejected.
type Reason string

const (
	// KeyInvalid: not a PEM key kiln can read (malformed, another PEM
	// type, an unsupported KDF, cipher or algorithm).
	KeyInvalid Reason = "KeyInvalid"
	// WrongPassword: the encrypted key did not open with the password.
	WrongPassword Reason = "WrongPassword"
)

// KeyError is the error ParseKey returns. Its message names what was
// expected and never contains key bytes or the password.
type KeyError struct {
	Reason Reason
	Detail string
}

func (e *KeyError) Error() string {
	if e.Reason == WrongPassword {
		return "signing key: wrong password (the encrypted key does not open with it)"
	}
	return "signing key: invalid: " + e.Detail
}

func invalid(format string, args ...any) error {
	return &KeyError{Reason: KeyInvalid, Detail: fmt.Sprintf(format, args...)}
}

// Key is an ECDSA P-256 private key. Its String and GoString never print
// the private scalar, so a key that reaches a log by mistake stays secret.
type Key struct {
	priv   *ecdsa.PrivateKey
	hint   string
	pubPEM []byte
}

func (k *Key) String() string   { return "signing.Key{ECDSA P-256, hint " + k.hint + "}" }
func (k *Key) GoString() string { return k.String() }

// Hint identifies the public key the way sigstore tools do: base64 of the
// SHA-256 of the PKIX DER public key. It is the bundle's publicKey hint.
func (k *Key) Hint() string { return k.hint }

// Public returns the public key.
func (k *Key) Public() *ecdsa.PublicKey { return &k.priv.PublicKey }

// encryptedKey is the JSON that go-securesystemslib's encrypted package
// writes and cosign wraps in its PEM block. []byte fields are base64.
type encryptedKey struct {
	KDF struct {
		Name   string `json:"name"`
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

// scryptCosts are the only scrypt parameters accepted, the three that
// go-securesystemslib writes (legacy 2^15, standard 2^16, OWASP 2^17, all
// r=8 p=1). The parameters come from the key file, i.e. from a tenant's
// Secret: accepting any N would let one Secret make the manager allocate
// gigabytes (scrypt needs 128·N·r bytes).
var scryptCosts = map[int]bool{1 << 15: true, 1 << 16: true, 1 << 17: true}

// ParseKey reads a cosign private key: PEM "ENCRYPTED SIGSTORE PRIVATE KEY"
// or "ENCRYPTED COSIGN PRIVATE KEY" (scrypt + nacl/secretbox around PKCS #8,
// as `cosign generate-key-pair` writes), or an unencrypted PKCS #8 "PRIVATE
// KEY" (password ignored). Only ECDSA P-256 keys are accepted: cosign's
// default, and the only algorithm kiln signs with. Errors are *KeyError.
func ParseKey(pemBytes, password []byte) (*Key, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, invalid("no PEM block found (expected %q)", SigstorePrivateKeyPEMType)
	}
	var der []byte
	switch block.Type {
	case SigstorePrivateKeyPEMType, CosignPrivateKeyPEMType:
		var err error
		if der, err = decrypt(block.Bytes, password); err != nil {
			return nil, err
		}
	case PKCS8PrivateKeyPEMType:
		der = block.Bytes
	default:
		return nil, invalid("PEM block type %q is not a cosign private key (expected %q)", block.Type, SigstorePrivateKeyPEMType)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, invalid("the key is not PKCS #8")
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, invalid("the key is %s, expected ECDSA P-256", algorithmName(parsed))
	}
	if priv.Curve != elliptic.P256() {
		return nil, invalid("the key is ECDSA %s, expected ECDSA P-256", priv.Curve.Params().Name)
	}
	return newKey(priv)
}

func newKey(priv *ecdsa.PrivateKey) (*Key, error) {
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, invalid("the public key does not encode: %v", err)
	}
	sum := sha256.Sum256(der)
	return &Key{
		priv:   priv,
		hint:   base64.StdEncoding.EncodeToString(sum[:]),
		pubPEM: pem.EncodeToMemory(&pem.Block{Type: publicKeyPEMType, Bytes: der}),
	}, nil
}

func algorithmName(k any) string {
	switch k.(type) {
	case *rsa.PrivateKey:
		return "RSA"
	case ed25519.PrivateKey:
		return "Ed25519"
	case *ecdh.PrivateKey:
		return "X25519"
	default:
		return fmt.Sprintf("%T", k)
	}
}

// decrypt opens go-securesystemslib's encrypted format. The JSON decoder's
// own errors are not wrapped: they can quote bytes of the input.
func decrypt(data, password []byte) ([]byte, error) {
	var ek encryptedKey
	if err := json.Unmarshal(data, &ek); err != nil {
		return nil, invalid("the encrypted key is not the JSON cosign writes")
	}
	if ek.KDF.Name != "scrypt" {
		return nil, invalid("key derivation %q is not supported (expected scrypt)", ek.KDF.Name)
	}
	p := ek.KDF.Params
	if !scryptCosts[p.N] || p.R != 8 || p.P != 1 {
		return nil, invalid("scrypt parameters N=%d r=%d p=%d are not one of cosign's (N=2^15..2^17, r=8, p=1)", p.N, p.R, p.P)
	}
	if len(ek.KDF.Salt) == 0 {
		return nil, invalid("the scrypt salt is empty")
	}
	if ek.Cipher.Name != "nacl/secretbox" {
		return nil, invalid("cipher %q is not supported (expected nacl/secretbox)", ek.Cipher.Name)
	}
	var nonce [24]byte
	if len(ek.Cipher.Nonce) != len(nonce) {
		return nil, invalid("the secretbox nonce is %d bytes, expected %d", len(ek.Cipher.Nonce), len(nonce))
	}
	copy(nonce[:], ek.Cipher.Nonce)
	if len(ek.Ciphertext) < secretbox.Overhead {
		return nil, invalid("the ciphertext is shorter than the secretbox tag")
	}
	derived, err := scrypt.Key(password, ek.KDF.Salt, p.N, p.R, p.P, 32)
	if err != nil {
		return nil, invalid("scrypt: %v", err)
	}
	var boxKey [32]byte
	copy(boxKey[:], derived)
	plain, ok := secretbox.Open(nil, ek.Ciphertext, &nonce, &boxKey)
	if !ok {
		return nil, &KeyError{Reason: WrongPassword}
	}
	return plain, nil
}

// Sign returns the ASN.1 DER ECDSA P-256 signature of SHA-256(payload).
// It is deterministic: with a nil random source, crypto/ecdsa's
// PrivateKey.Sign derives the nonce from the key and the digest as RFC 6979
// specifies (Go 1.24+). The same key and payload give the same bytes, so
// every artifact that embeds a signature has a reproducible digest.
func (k *Key) Sign(payload []byte) ([]byte, error) {
	digest := sha256.Sum256(payload)
	sig, err := k.priv.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return sig, nil
}

// PublicKeyPEM returns the public key as PEM "PUBLIC KEY" (PKIX), the
// format of cosign.pub.
func (k *Key) PublicKeyPEM() []byte { return bytes.Clone(k.pubPEM) }

// ParsePublicKey reads a PEM "PUBLIC KEY" (cosign.pub) holding an ECDSA
// P-256 key.
func ParsePublicKey(pemBytes []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != publicKeyPEMType {
		return nil, invalid("no PEM %q block found", publicKeyPEMType)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, invalid("the public key is not PKIX")
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, invalid("the public key is %T, expected ECDSA P-256", pub)
	}
	return ec, nil
}

// ErrBadSignature is returned by Verify when the signature does not match.
var ErrBadSignature = errors.New("signature does not verify")

// Verify checks an ASN.1 DER ECDSA signature of SHA-256(payload).
func Verify(pub *ecdsa.PublicKey, payload, sig []byte) error {
	digest := sha256.Sum256(payload)
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		return ErrBadSignature
	}
	return nil
}
