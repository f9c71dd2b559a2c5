package controllers

import (
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	"github.com/kiln-build/kiln/internal/testkit/kube"
)

// A multi-platform ImageBuild becomes Ready with every image in
// status.manifests; when its base index moves for one architecture only,
// Rebuild rebuilds the index (the other platform's image stays the same)
// and Report only sets BaseUpToDate=False.
func TestMultiPlatformBuildAndOneArchBaseDrift(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	baseRef := reg.Host + "/lib/base:stable"
	first := testkit.PushIndex(t, baseRef, testkit.IndexOptions{Attestation: true}, "linux/amd64", "linux/arm64")
	kube.Create(t, env.k8s, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "certs", Namespace: ns},
		BinaryData: map[string][]byte{"ca.tar": testkit.Files(t, "etc/ca.pem", "CA")},
	})
	appURL := func(arch string) kilnv1.Source {
		return kilnv1.Source{URL: files.Put("/app-"+arch+".tar", testkit.Files(t, "app/arch", arch))}
	}
	for _, policy := range []kilnv1.BaseUpdatePolicy{kilnv1.BaseUpdateRebuild, kilnv1.BaseUpdateReport} {
		name := strings.ToLower(string(policy))
		ib := &kilnv1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: kilnv1.ImageBuildSpec{
				Base:      &kilnv1.Base{Image: baseRef, UpdatePolicy: policy, PollInterval: &metav1.Duration{Duration: time.Second}},
				Platforms: []kilnv1.PlatformBuild{{Platform: "linux/amd64"}, {Platform: "linux/arm64"}},
				Layers: []kilnv1.Layer{
					{Name: "certs", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "certs", Key: "ca.tar"}}},
					{Name: "app", Variants: []kilnv1.LayerVariant{{Platform: "linux/amd64", Source: appURL("amd64")}, {Platform: "linux/arm64", Source: appURL("arm64")}}},
				},
				Target: kilnv1.Target{Image: reg.Host + "/team/" + name + ":1.0"},
			},
		}
		kube.Create(t, env.k8s, ib)
	}
	before := map[string]*kilnv1.ImageBuild{}
	for _, n := range []string{"rebuild", "report"} {
		got := waitReady(t, ns, n)
		st := got.Status
		if len(st.Manifests) != 2 || st.Base == nil || st.Base.RefDigest != first.Digest.String() || st.MediaType != "application/vnd.oci.image.index.v1+json" {
			t.Fatalf("%s: status %s", n, kube.Describe(got))
		}
		for i, arch := range []string{"linux/amd64", "linux/arm64"} {
			m := st.Manifests[i]
			if m.Requested != arch || m.Base == nil || m.Base.Digest != first.Children[arch].String() || len(m.Layers) != 2 || m.Layers[1].SourceDigest == "" {
				t.Errorf("%s: manifests[%d] = %+v", n, i, m)
			}
		}
		before[n] = got
	}

	// Only arm64 moves: amd64 keeps its image.
	second := testkit.PushIndex(t, baseRef, testkit.IndexOptions{Attestation: true, Reuse: map[string]v1.Image{"linux/amd64": first.Images["linux/amd64"]}}, "linux/amd64", "linux/arm64")
	testkit.WaitFor(t, 60*time.Second, "Rebuild policy rebuilds the index on the moved base", func() (bool, string) {
		got := kube.Get(t, env.k8s, ns, "rebuild")
		return kube.Ready(got) && got.Status.Base.RefDigest == second.Digest.String() && got.Status.Digest != before["rebuild"].Status.Digest, kube.Describe(got)
	})
	got := kube.Get(t, env.k8s, ns, "rebuild")
	if got.Status.Manifests[0].Digest != before["rebuild"].Status.Manifests[0].Digest || got.Status.Manifests[1].Digest == before["rebuild"].Status.Manifests[1].Digest {
		t.Errorf("after an arm64-only base move: amd64 %s -> %s (want unchanged), arm64 %s -> %s (want new)",
			before["rebuild"].Status.Manifests[0].Digest, got.Status.Manifests[0].Digest, before["rebuild"].Status.Manifests[1].Digest, got.Status.Manifests[1].Digest)
	}
	testkit.WaitFor(t, 60*time.Second, "Report policy sets BaseUpToDate=False", func() (bool, string) {
		got := kube.Get(t, env.k8s, ns, "report")
		c := kube.Condition(got, kilnv1.BaseUpToDateCondition)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, second.Digest.String()), kube.Describe(got)
	})
	if got := kube.Get(t, env.k8s, ns, "report"); got.Status.Digest != before["report"].Status.Digest || !kube.Ready(got) {
		t.Errorf("Report policy rebuilt or lost Ready: %s", kube.Describe(got))
	}
}
