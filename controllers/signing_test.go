package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/api/v1alpha1/v1alpha1test"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// A signing key Secret created after the ImageBuild: Stalled
// SigningKeyNotFound naming it (nothing pushed), then Ready with Signed and
// Attested events once it exists; a rotated key re-signs the same image.
func TestSigningKeySecretLifecycle(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	ib := simpleBuild(ns, "signed", files.Put("/signed.tar", testkit.Files(t, "etc/app.conf", "x")), reg, "signed")
	ib.Spec.Signing, ib.Spec.Attestations = v1alpha1test.SigningSpec()
	kube.Create(t, env.k8s, ib)
	testkit.WaitFor(t, 60*time.Second, "Stalled SigningKeyNotFound", func() (bool, string) {
		got := kube.Get(t, env.k8s, ns, "signed")
		c := kube.Condition(got, kilnv1.StalledCondition)
		return c != nil && c.Reason == "SigningKeyNotFound" && strings.Contains(c.Message, `"cosign-key"`), kube.Describe(got)
	})
	if w := reg.Writes(); w != 0 {
		t.Errorf("%d registry writes before the key exists; want none", w)
	}

	key, _ := testkit.SigningKey(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cosign-key", Namespace: ns},
		Data: map[string][]byte{kilnv1.CosignKeyKey: key, kilnv1.CosignPasswordKey: {}}}
	kube.Create(t, env.k8s, secret)
	got := waitReady(t, ns, "signed")
	if len(got.Status.Signatures) != 1 || len(got.Status.Attestations) != 2 {
		t.Fatalf("status: %s", kube.Describe(got))
	}
	waitEvents(t, ns, "signed", EventPushed, EventSigned, EventAttested)

	rotated, _ := testkit.SigningKey(t)
	secret.Data[kilnv1.CosignKeyKey] = rotated
	if err := env.k8s.Update(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 60*time.Second, "re-signed with the rotated key", func() (bool, string) {
		now := kube.Get(t, env.k8s, ns, "signed")
		return kube.Ready(now) && len(now.Status.Signatures) == 1 && now.Status.Signatures[0].Digest != got.Status.Signatures[0].Digest &&
			now.Status.Digest == got.Status.Digest, kube.Describe(now)
	})
}
