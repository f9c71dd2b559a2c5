package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/failure"
)

// Flux sources are read as unstructured objects: kiln needs three fields
// of status.artifact, the Ready condition and spec.url, and the Flux API
// module would add a dependency tree for that. The version is whichever
// the API server prefers (the RESTMapper's), so any Flux release that
// serves the kinds works.

// sourceRefIndex indexes ImageBuilds by the Flux sources they name
// ("GitRepository/name"), as configMapIndex does for ConfigMaps.
const sourceRefIndex = "kiln.dev/sourceRefs"

func indexSourceRefs(o client.Object) []string {
	ib, ok := o.(*kilnv1.ImageBuild)
	if !ok {
		return nil
	}
	var out []string
	for _, r := range ib.Spec.SourceRefs() {
		out = append(out, r.String())
	}
	return uniq(out)
}

// fluxGroupKind is the API group and kind of a Flux source kind.
func fluxGroupKind(k kilnv1.SourceKind) schema.GroupKind {
	return schema.GroupKind{Group: kilnv1.FluxSourceGroup, Kind: string(k)}
}

// servedKind returns the version the API server serves kind in, or
// ok=false when the kind is not served (the Flux CRDs are not installed).
// The manager's RESTMapper looks an unknown group up again on every miss,
// so a CRD installed later is found by the next call.
func servedKind(mapper apimeta.RESTMapper, k kilnv1.SourceKind) (gvk schema.GroupVersionKind, ok bool, err error) {
	m, err := mapper.RESTMapping(fluxGroupKind(k))
	switch {
	case apimeta.IsNoMatchError(err):
		return gvk, false, nil
	case err != nil:
		return gvk, false, err
	}
	return m.GroupVersionKind, true, nil
}

// readArtifacts reads the artifact of every sourceRef of the spec, by
// engine.ArtifactKey. A source that cannot be built from fails the whole
// read: no CRD or no object (SourceNotFound), no artifact yet or Ready=False
// (SourceNotReady, never a stall: source-controller retries it, and its
// next status change wakes this ImageBuild).
func (r *ImageBuildReconciler) readArtifacts(ctx context.Context, ns string, refs []kilnv1.SourceReference) (map[string]engine.Artifact, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	out := make(map[string]engine.Artifact, len(refs))
	for _, ref := range refs {
		a, err := r.readArtifact(ctx, ns, ref)
		if err != nil {
			return nil, err
		}
		out[engine.ArtifactKey(ref)] = a
	}
	return out, nil
}

func (r *ImageBuildReconciler) readArtifact(ctx context.Context, ns string, ref kilnv1.SourceReference) (engine.Artifact, error) {
	gvk, ok, err := servedKind(r.restMapper(), ref.Kind)
	if err != nil {
		return engine.Artifact{}, failure.Retryable(fmt.Errorf("looking up the %s kind: %w", ref.Kind, err), 0)
	}
	if !ok {
		return engine.Artifact{}, failure.Permanentf(failure.SourceNotFound,
			"sourceRef %s %q: the Flux source CRDs are not installed (the API server serves no %s): install Flux's source-controller",
			ref.Kind, ref.Name, fluxGroupKind(ref.Kind))
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, u)
	switch {
	case apierrors.IsNotFound(err):
		return engine.Artifact{}, failure.Permanentf(failure.SourceNotFound, "sourceRef %s %q not found in namespace %q", ref.Kind, ref.Name, ns)
	case err != nil:
		return engine.Artifact{}, failure.Retryable(fmt.Errorf("reading %s %q: %w", ref.Kind, ref.Name, err), 0)
	}
	return artifactOf(ref, u)
}

// artifactOf takes a Flux source object's artifact. Ready=Unknown with an
// artifact is fine: source-controller sets it while a reconcile runs, and
// status.artifact is always a complete, verified artifact. Ready=False
// means the source is failing: kiln waits rather than build from what may
// be an outdated artifact.
func artifactOf(ref kilnv1.SourceReference, u *unstructured.Unstructured) (engine.Artifact, error) {
	str := func(fields ...string) string {
		v, _, _ := unstructured.NestedString(u.Object, fields...)
		return v
	}
	a := engine.Artifact{
		URL:       str("status", "artifact", "url"),
		Digest:    str("status", "artifact", "digest"),
		Revision:  str("status", "artifact", "revision"),
		SourceURL: str("spec", "url"),
	}
	ready := readyCondition(u)
	switch {
	case ready != nil && ready.Status == metav1.ConditionFalse:
		return a, notReady("sourceRef %s %q is not Ready (%s: %s)", ref.Kind, ref.Name, ready.Reason, ready.Message)
	case a.URL == "":
		return a, notReady("sourceRef %s %q has no artifact yet", ref.Kind, ref.Name)
	}
	return a, nil
}

// restMapper is RESTMapper, else the client's (a reconciler built
// without SetupWithManager).
func (r *ImageBuildReconciler) restMapper() apimeta.RESTMapper {
	if r.RESTMapper != nil {
		return r.RESTMapper
	}
	return r.Client.RESTMapper()
}

func notReady(format string, args ...any) error {
	return &failure.Error{Reason: failure.SourceNotReady, Err: fmt.Errorf(format, args...)}
}

// readyCondition is the object's Ready condition, nil when it has none.
func readyCondition(u *unstructured.Unstructured) *metav1.Condition {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != kilnv1.ReadyCondition {
			continue
		}
		s := func(k string) string { v, _ := m[k].(string); return v }
		return &metav1.Condition{Type: kilnv1.ReadyCondition, Status: metav1.ConditionStatus(s("status")), Reason: s("reason"), Message: s("message")}
	}
	return nil
}

// artifactLines are the fingerprint lines of the sourceRefs: the
// artifact's digest and revision. Nothing else of the object counts (its
// URL moves with source-controller's address, its conditions with every
// reconcile), so an unchanged artifact never rebuilds.
func artifactLines(refs []kilnv1.SourceReference, arts map[string]engine.Artifact) []string {
	lines := make([]string, 0, len(refs))
	for _, ref := range refs {
		a := arts[engine.ArtifactKey(ref)]
		lines = append(lines, ref.String()+" artifact "+a.Digest+" "+a.Revision)
	}
	return lines
}

// DefaultSourceKindsRecheck is how often the manager looks for Flux source
// kinds it does not watch yet (their CRDs installed after it started).
const DefaultSourceKindsRecheck = time.Minute

// sourceWatcher adds the metadata-only watches of the Flux source kinds,
// each once the API server serves it: at start, then every interval. A
// watch of a kind that is not served would fail the manager's start (its
// informer never syncs), and the Flux CRDs are optional. Adding a watch
// lists the kind's objects, so ImageBuilds waiting for a source installed
// late are reconciled at once.
type sourceWatcher struct {
	ctrl     controller.Controller
	cache    cache.Cache
	mapper   apimeta.RESTMapper
	interval time.Duration
	mapFunc  func(kind kilnv1.SourceKind) handler.MapFunc

	mu      sync.Mutex
	watched map[kilnv1.SourceKind]bool
}

// Start checks until ctx ends (manager.Runnable).
func (w *sourceWatcher) Start(ctx context.Context) error {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		w.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// check adds the watch of every served kind not watched yet.
func (w *sourceWatcher) check(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx).WithName("flux-sources")
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range kilnv1.SourceKinds {
		if w.watched[k] {
			continue
		}
		gvk, ok, err := servedKind(w.mapper, k)
		if err != nil {
			log.Error(err, "looking up a Flux source kind", "kind", k)
			continue
		}
		if !ok {
			continue
		}
		obj := &metav1.PartialObjectMetadata{}
		obj.SetGroupVersionKind(gvk)
		if err := w.ctrl.Watch(source.Kind[client.Object](w.cache, obj, handler.EnqueueRequestsFromMapFunc(w.mapFunc(k)))); err != nil {
			log.Error(err, "watching a Flux source kind", "kind", k)
			continue
		}
		w.watched[k] = true
		log.Info("watching Flux source kind", "kind", gvk.String())
	}
}

// Watching reports whether kind is watched (for tests).
func (w *sourceWatcher) Watching(k kilnv1.SourceKind) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.watched[k]
}

// mapSource maps a Flux source event to the ImageBuilds naming it.
func (r *ImageBuildReconciler) mapSource(kind kilnv1.SourceKind) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list kilnv1.ImageBuildList
		key := kilnv1.SourceReference{Kind: kind, Name: o.GetName()}.String()
		if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{sourceRefIndex: key}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "listing ImageBuilds referencing a Flux source", "source", key)
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for i := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
		return reqs
	}
}
