package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// The objects behind configMapDir and files entries are read, watched and
// fingerprinted: a metadata edit of the ConfigMap builds nothing, a new key
// of a configMapDir (every key is used) and a changed Secret value of a
// files entry each rebuild.
func TestConfigMapDirAndFilesChangesRebuild(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	kube.Create(t, env.k8s,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "site", Namespace: ns},
			Data: map[string]string{"index.html": "<h1>v1</h1>"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls", Namespace: ns},
			Data: map[string][]byte{"key.pem": []byte("k1"), "unused": []byte("u")}},
	)
	content := "port: 8080\n"
	kube.Create(t, env.k8s, &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: kilnv1.ImageBuildSpec{
			Layers: []kilnv1.Layer{
				{Name: "site", Source: &kilnv1.Source{ConfigMapDir: &kilnv1.DirSource{Name: "site", TargetDir: "/srv/www"}}},
				{Name: "config", Source: &kilnv1.Source{Files: []kilnv1.FileEntry{
					{Path: "/etc/app.yaml", Content: &content},
					{Path: "/etc/tls/key.pem", SecretKeyRef: &kilnv1.KeySelector{Name: "tls", Key: "key.pem"}, Mode: "0600"},
				}}},
			},
			Target: kilnv1.Target{Image: reg.Host + "/web:1"},
		},
	})
	first := waitReady(t, ns, "web")
	if got := first.Status.Layers[1].SourceDigest; got != "secret:files" {
		t.Errorf("files layer sourceDigest %q, want secret:files", got)
	}

	edit := func(obj client.Object, change func()) {
		t.Helper()
		if err := env.k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: obj.GetName()}, obj); err != nil {
			t.Fatal(err)
		}
		change()
		if err := env.k8s.Update(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
	}
	n, writes := reconciles(t), reg.Writes()
	cm, secret := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "site"}}, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls"}}
	edit(cm, func() { cm.Labels = map[string]string{"team": "a"} })
	edit(secret, func() { secret.Data["unused"] = []byte("v") })
	testkit.WaitFor(t, 30*time.Second, "the re-checks of the unused edits", func() (bool, string) {
		return reconciles(t) >= n+2, "no reconciles yet"
	})
	if after := kube.Get(t, env.k8s, ns, "web"); after.ResourceVersion != first.ResourceVersion || reg.Writes() != writes {
		t.Errorf("unused edits wrote status (%s -> %s) or pushed (%d writes)", first.ResourceVersion, after.ResourceVersion, reg.Writes()-writes)
	}

	changed := func(what string, prev *kilnv1.ImageBuild, layer int) *kilnv1.ImageBuild {
		t.Helper()
		var ib *kilnv1.ImageBuild
		testkit.WaitFor(t, 60*time.Second, what, func() (bool, string) {
			ib = kube.Get(t, env.k8s, ns, "web")
			return kube.Ready(ib) && ib.Status.Digest != prev.Status.Digest, kube.Describe(ib)
		})
		for i := range ib.Status.Layers {
			if moved := ib.Status.Layers[i].Digest != prev.Status.Layers[i].Digest; moved != (i == layer) {
				t.Errorf("%s: layer %d changed %t", what, i, moved)
			}
		}
		return ib
	}
	edit(cm, func() { cm.Data["about.html"] = "<p>new key</p>" })
	second := changed("a rebuild for the new site key", first, 0)
	edit(secret, func() { secret.Data["key.pem"] = []byte("k2") })
	third := changed("a rebuild for the new key.pem", second, 1)
	if third.Status.Layers[1].SourceDigest != "secret:files" {
		t.Errorf("sourceDigest %q after the rebuild", third.Status.Layers[1].SourceDigest)
	}
}
