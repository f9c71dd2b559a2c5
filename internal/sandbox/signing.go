package sandbox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// SigningSecretsFor makes one throwaway key pair for the samples that sign
// and returns a Secret (cosign.key, cosign.password, cosign.pub) for each
// keyRef they name, all holding that pair, plus its public key PEM for
// `cosign verify --key`. The private key is an unencrypted PKCS #8 key
// with an empty password (kiln reads it like cosign's encrypted keys): it
// lives only as long as the sandbox. A real cluster uses
// `cosign generate-key-pair k8s://ns/name`.
func SigningSecretsFor(builds []*kilnv1.ImageBuild, namespace string) ([]*corev1.Secret, []byte, error) {
	var names []string
	for _, ib := range builds {
		if sg := ib.Spec.Signing; sg != nil && sg.Cosign != nil && !slices.Contains(names, sg.Cosign.KeyRef.Name) {
			names = append(names, sg.Cosign.KeyRef.Name)
		}
	}
	if len(names) == 0 {
		return nil, nil, nil
	}
	priv, pub, err := keyPair()
	if err != nil {
		return nil, nil, err
	}
	out := make([]*corev1.Secret, 0, len(names))
	for _, n := range names {
		out = append(out, &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: namespace},
			Data:       map[string][]byte{kilnv1.CosignKeyKey: priv, kilnv1.CosignPasswordKey: nil, "cosign.pub": pub},
		})
	}
	return out, pub, nil
}

func keyPair() (private, public []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the sandbox signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}
