//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// TestSignedIndexThroughTheManager is the user's path of the README: a
// cosign key pair made by `cosign generate-key-pair` in a Secret, a
// two-platform ImageBuild with spec.signing and both attestations applied
// to the cluster, the manager builds, signs and attests, and the cosign CLI
// verifies the index and each child by digest, both attestation types and
// the tree, against the CNCF registry (tag-schema fallback).
func TestSignedIndexThroughTheManager(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	key, err := os.ReadFile(signingFixture("cosign.key"))
	if err != nil {
		t.Fatal(err)
	}
	pw, err := os.ReadFile(signingFixture("cosign.password"))
	if err != nil {
		t.Fatal(err)
	}
	kube.Create(t, s.k8s, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cosign-key"},
		Data:       map[string][]byte{kilnv1.CosignKeyKey: key, kilnv1.CosignPasswordKey: bytes.TrimRight(pw, "\n")},
	})
	rootfs := testkit.Tar(t, testkit.Dir("etc/"), testkit.File("etc/app.conf", "port=8080\n"), testkit.Dir("bin/"), testkit.File("bin/app", "#!app").WithMode(0o755))
	ib := imageBuild(ns, "signed", "signed/app")
	ib.Spec.Base = nil
	ib.Spec.Platforms = []kilnv1.PlatformBuild{{Platform: "linux/amd64"}, {Platform: "linux/arm64"}}
	ib.Spec.Layers = []kilnv1.Layer{urlLayer("rootfs", s.serveFile(t, "signed/rootfs.tar.gz", testkit.Gzip(t, rootfs)))}
	ib.Spec.Signing = &kilnv1.Signing{Cosign: &kilnv1.CosignSigning{KeyRef: kilnv1.LocalObjectReference{Name: "cosign-key"}}}
	ib.Spec.Attestations = &kilnv1.Attestations{SBOM: &kilnv1.SBOM{}, Provenance: &kilnv1.Provenance{}}
	kube.Create(t, s.k8s, ib)
	ib = waitReady(t, ns, "signed", 3*time.Minute)
	if len(ib.Status.Signatures) != 3 || len(ib.Status.Attestations) != 6 {
		t.Fatalf("status: %d signatures, %d attestations; want 3 and 6\n%s", len(ib.Status.Signatures), len(ib.Status.Attestations), kube.Describe(ib))
	}

	env, pub := cosignEnv(t), signingFixture("cosign.pub")
	repo := strings.Split(digestRef(t, ib), "@")[0]
	subjects := []string{ib.Status.Digest}
	for _, m := range ib.Status.Manifests {
		subjects = append(subjects, m.Digest)
	}
	for _, d := range subjects {
		ref := repo + "@" + d
		if out := mustCosign(t, env, append(append([]string{"verify"}, cosignFlags(pub)...), ref)...); !strings.Contains(out, d) {
			t.Errorf("cosign verify %s does not name the digest:\n%s", ref, out)
		}
		for _, typ := range []string{"slsaprovenance1", "spdxjson"} {
			mustCosign(t, env, append(append([]string{"verify-attestation"}, cosignFlags(pub)...), "--type", typ, ref)...)
		}
	}
	tree := mustCosign(t, env, "tree", "--allow-insecure-registry", "--allow-http-registry", repo+"@"+ib.Status.Digest)
	if !strings.Contains(tree, "https://spdx.dev/Document") && !strings.Contains(tree, "application/vnd.dev.sigstore.bundle") {
		t.Errorf("cosign tree lists no attestations:\n%s", tree)
	}
	other := otherPublicKey(t)
	failCosign(t, env, append(append([]string{"verify"}, cosignFlags(other)...), repo+"@"+ib.Status.Digest)...)

	// Nothing changed: a forced reconcile finds everything attached.
	before := ib.Status.Signatures[0].Digest
	kube.Update(t, s.k8s, ns, "signed", func(ib *kilnv1.ImageBuild) {
		ib.Annotations = map[string]string{"reconcile.fluxcd.io/requestedAt": "again"}
	})
	ib = waitFor(t, ns, "signed", time.Minute, "request handled", func(ib *kilnv1.ImageBuild) (bool, error) {
		return ib.Status.LastHandledReconcileAt == "again" && kube.Ready(ib), nil
	})
	if ib.Status.Signatures[0].Digest != before {
		t.Errorf("signature digest changed on an unchanged reconcile: %s -> %s", before, ib.Status.Signatures[0].Digest)
	}
}
