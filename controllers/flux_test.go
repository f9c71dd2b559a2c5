package controllers

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

var gitRepositoryGVK = schema.GroupVersionKind{Group: kilnv1.FluxSourceGroup, Version: "v1", Kind: "GitRepository"}

// repoArtifact is a GitRepository artifact as source-controller writes it:
// files 0600 (executables 0700), directories 0750.
func repoArtifact(t *testing.T, app string) []byte {
	return testkit.Gzip(t, testkit.Tar(t,
		testkit.Dir("deploy/").WithMode(0o750),
		testkit.File("deploy/app.yaml", app).WithMode(0o600),
		testkit.File("deploy/bin/run", "#!/bin/sh").WithMode(0o700),
		testkit.File("README.md", "not in the layer").WithMode(0o600),
	))
}

// TestFluxSourceRefs runs the life of a sourceRef layer: the manager runs
// without the Flux CRDs (SourceNotFound saying so), finds the kinds once
// they are installed, waits for a GitRepository without an artifact
// (SourceNotReady, not Stalled), builds once the artifact appears (files
// readable by anyone), rebuilds for a new revision only, and stalls with
// DigestMismatch when the artifact's bytes do not match its digest.
func TestFluxSourceRefs(t *testing.T) {
	ctx := context.Background()
	ns := kube.Namespace(t, env.k8s)
	reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
	kube.Create(t, env.k8s, &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: ns},
		Spec: kilnv1.ImageBuildSpec{
			Layers: []kilnv1.Layer{{Name: "manifests", Source: &kilnv1.Source{
				SourceRef: &kilnv1.SourceReference{Kind: kilnv1.GitRepositoryKind, Name: "platform"},
				Path:      "deploy", TargetDir: "/opt/config"}}},
			Target: kilnv1.Target{Image: reg.Host + "/cfg:1"},
		},
	})
	waitCondition(t, ns, "cfg", "SourceNotFound saying the Flux CRDs are missing", func(ib *kilnv1.ImageBuild) bool {
		c := kube.Condition(ib, kilnv1.ReadyCondition)
		return c != nil && c.Reason == string(failure.SourceNotFound) && strings.Contains(c.Message, "the Flux source CRDs are not installed") &&
			kube.Condition(ib, kilnv1.StalledCondition) == nil
	})

	if _, err := envtest.InstallCRDs(env.cfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join("testdata", "fluxcrds")}}); err != nil {
		t.Fatal(err)
	}
	env.r.sources.check(ctx)
	for _, k := range kilnv1.SourceKinds {
		if !env.r.sources.Watching(k) {
			t.Errorf("%s not watched once its CRD is installed", k)
		}
	}
	repo := &unstructured.Unstructured{}
	repo.SetGroupVersionKind(gitRepositoryGVK)
	repo.SetNamespace(ns)
	repo.SetName("platform")
	repo.Object["spec"] = map[string]any{"url": "https://user:pw@git.example/org/platform", "interval": "1m"}
	if err := env.k8s.Create(ctx, repo); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, "cfg", "SourceNotReady while the GitRepository has no artifact", func(ib *kilnv1.ImageBuild) bool {
		c := kube.Condition(ib, kilnv1.ReadyCondition)
		return c != nil && c.Reason == string(failure.SourceNotReady) && kube.Condition(ib, kilnv1.StalledCondition) == nil
	})

	v1 := repoArtifact(t, "replicas: 1")
	setArtifact(t, repo, files.Put("/gitrepository/platform/1.tar.gz", v1), testkit.Digest(v1), "main@sha1:1111")
	first := waitReady(t, ns, "cfg")
	if got := first.Status.Layers[0].SourceRevision; got != "main@sha1:1111" {
		t.Errorf("sourceRevision %q", got)
	}
	checkImage(t, first.Status.Image, "main@sha1:1111", []string{
		"opt/ 755 0:0", "opt/config/ 755 0:0", "opt/config/app.yaml 644 0:0",
		"opt/config/bin/ 755 0:0", "opt/config/bin/run 755 0:0",
	})

	// A status change that keeps the artifact builds nothing.
	n, writes := reconciles(t), reg.Writes()
	setCondition := func(reason string) {
		t.Helper()
		if err := env.k8s.Get(ctx, client.ObjectKeyFromObject(repo), repo); err != nil {
			t.Fatal(err)
		}
		_ = unstructured.SetNestedSlice(repo.Object, []any{map[string]any{
			"type": "Ready", "status": "True", "reason": reason, "message": "stored artifact",
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
		}}, "status", "conditions")
		if err := env.k8s.Status().Update(ctx, repo); err != nil {
			t.Fatal(err)
		}
	}
	setCondition("Succeeded")
	testkit.WaitFor(t, 30*time.Second, "the reconcile of the status change", func() (bool, string) {
		return reconciles(t) > n, "no reconcile yet"
	})
	if after := kube.Get(t, env.k8s, ns, "cfg"); after.Status.Digest != first.Status.Digest || reg.Writes() != writes {
		t.Errorf("an unchanged artifact rebuilt (%d writes)", reg.Writes()-writes)
	}

	v2 := repoArtifact(t, "replicas: 2")
	setArtifact(t, repo, files.Put("/gitrepository/platform/2.tar.gz", v2), testkit.Digest(v2), "main@sha1:2222")
	var second *kilnv1.ImageBuild
	waitCondition(t, ns, "cfg", "a rebuild for the new revision", func(ib *kilnv1.ImageBuild) bool {
		second = ib
		return kube.Ready(ib) && ib.Status.Digest != first.Status.Digest
	})
	if got := second.Status.Layers[0].SourceRevision; got != "main@sha1:2222" {
		t.Errorf("sourceRevision %q after the new artifact", got)
	}

	other := testkit.Digest([]byte("not the artifact"))
	setArtifact(t, repo, files.Put("/gitrepository/platform/3.tar.gz", repoArtifact(t, "replicas: 3")), other, "main@sha1:3333")
	waitCondition(t, ns, "cfg", "DigestMismatch for an artifact that is not its digest", func(ib *kilnv1.ImageBuild) bool {
		c := kube.Condition(ib, kilnv1.StalledCondition)
		return c != nil && c.Reason == string(failure.DigestMismatch) && strings.Contains(c.Message, other)
	})
}

// setArtifact writes status.artifact (through the status subresource) and
// a Ready=True condition, as source-controller does after a fetch.
func setArtifact(t *testing.T, repo *unstructured.Unstructured, url, digest, revision string) {
	t.Helper()
	ctx := context.Background()
	if err := env.k8s.Get(ctx, client.ObjectKeyFromObject(repo), repo); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	repo.Object["status"] = map[string]any{
		"artifact": map[string]any{"url": url, "digest": digest, "revision": revision, "path": "gitrepository/x.tar.gz", "lastUpdateTime": now},
		"conditions": []any{map[string]any{
			"type": "Ready", "status": "True", "reason": "Succeeded", "message": "stored artifact for " + revision, "lastTransitionTime": now,
		}},
	}
	if err := env.k8s.Status().Update(ctx, repo); err != nil {
		t.Fatal(err)
	}
}

func waitCondition(t *testing.T, ns, name, what string, ok func(*kilnv1.ImageBuild) bool) {
	t.Helper()
	testkit.WaitFor(t, 60*time.Second, what, func() (bool, string) {
		ib := kube.Get(t, env.k8s, ns, name)
		return ok(ib), kube.Describe(ib)
	})
}

// checkImage pulls ref and compares its one layer's entries ("name mode
// uid:gid") and its source and revision annotations.
func checkImage(t *testing.T, ref, revision string, want []string) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Annotations[engine.AnnotationSource] + " " + m.Annotations[engine.AnnotationRevision]; got != "https://git.example/org/platform "+revision {
		t.Errorf("annotations %q", got)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range testkit.ReadTar(t, &buf) {
		got = append(got, fmt.Sprintf("%s %o %d:%d", e.Header.Name, e.Header.Mode, e.Header.Uid, e.Header.Gid))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer entries\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// artifactOf takes the artifact whatever Ready says but False, and says
// why it cannot build from a source otherwise.
func TestArtifactOf(t *testing.T) {
	ref := kilnv1.SourceReference{Kind: kilnv1.OCIRepositoryKind, Name: "bundle"}
	obj := func(status map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"url": "oci://r.example/bundle"}, "status": status}}
	}
	art := map[string]any{"url": "http://sc/a.tar.gz", "digest": "sha256:ab", "revision": "v1@sha256:cd"}
	cond := func(status string) []any {
		return []any{map[string]any{"type": "Ready", "status": status, "reason": "R", "message": "m"}}
	}
	tests := []struct {
		name   string
		status map[string]any
		reason failure.Reason
		want   string
	}{
		{"ready", map[string]any{"artifact": art, "conditions": cond("True")}, "", ""},
		{"reconciling keeps the artifact", map[string]any{"artifact": art, "conditions": cond("Unknown")}, "", ""},
		{"no conditions yet", map[string]any{"artifact": art}, "", ""},
		{"failing", map[string]any{"artifact": art, "conditions": cond("False")}, failure.SourceNotReady, `sourceRef OCIRepository "bundle" is not Ready (R: m)`},
		{"no artifact", map[string]any{"conditions": cond("Unknown")}, failure.SourceNotReady, `sourceRef OCIRepository "bundle" has no artifact yet`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := artifactOf(ref, obj(tt.status))
			if tt.want == "" {
				if err != nil || a != (engine.Artifact{URL: "http://sc/a.tar.gz", Digest: "sha256:ab", Revision: "v1@sha256:cd", SourceURL: "oci://r.example/bundle"}) {
					t.Fatalf("artifact %+v, err %v", a, err)
				}
				return
			}
			if err == nil || err.Error() != tt.want || failure.ReasonOf(err) != tt.reason || failure.IsPermanent(err) {
				t.Fatalf("err %v (%s), want %q (%s, not permanent)", err, failure.ReasonOf(err), tt.want, tt.reason)
			}
		})
	}
}
