package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/failure"
)

// Event reasons, emitted on transitions only.
const (
	EventBuildStarted = "BuildStarted"
	EventPushed       = "Pushed"
	EventUpToDate     = "UpToDate"
	EventBuildFailed  = "BuildFailed"
	EventBaseChanged  = "BaseChanged"
)

// DefaultPollInterval is how often a tag base is re-resolved when
// spec.base.pollInterval is unset.
const DefaultPollInterval = 10 * time.Minute

// ImageBuildReconciler reconciles ImageBuild objects: it resolves what the
// spec references in the object's namespace, calls the build engine and
// records the result in status. It holds no build logic of its own.
type ImageBuildReconciler struct {
	// Client reads ImageBuilds from the cache and patches their status.
	Client client.Client
	// APIReader is uncached: ServiceAccounts and ConfigMap/Secret data are
	// read with direct GETs so the manager never caches Secret data.
	APIReader client.Reader
	// MetadataReader reads ConfigMap/Secret metadata (uid, resourceVersion)
	// from the metadata-only informers; defaults to Client.
	MetadataReader client.Reader
	// Engine is shared by all reconciles: one blob store, one single-flight.
	Engine   *engine.Engine
	Recorder events.EventRecorder
	Metrics  *Metrics
	// Now is the clock for status timestamps and polling; default time.Now.
	Now func() time.Time
	// MaxConcurrentBuilds is MaxConcurrentReconciles; default 4.
	MaxConcurrentBuilds int

	inflight inflight
	polls    pollTimes
}

// SetupWithManager registers the field indexes and the watches: ImageBuilds
// (spec changes), and ConfigMaps/Secrets metadata-only, mapped to the
// ImageBuilds of their namespace that reference them.
func (r *ImageBuildReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &kilnv1.ImageBuild{}, configMapIndex, indexConfigMaps); err != nil {
		return fmt.Errorf("indexing ImageBuilds by ConfigMap: %w", err)
	}
	if err := idx.IndexField(ctx, &kilnv1.ImageBuild{}, secretIndex, indexSecrets); err != nil {
		return fmt.Errorf("indexing ImageBuilds by Secret: %w", err)
	}
	n := r.MaxConcurrentBuilds
	if n <= 0 {
		n = 4
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("imagebuild").
		// Status patches do not bump the generation: without the predicate
		// every status write would come back as one more reconcile.
		For(&kilnv1.ImageBuild{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&kilnv1.ImageBuild{}, r.cancelOnChange()).
		WatchesMetadata(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.mapConfigMap)).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.mapSecret)).
		WithOptions(controller.Options{MaxConcurrentReconciles: n}).
		Complete(r)
}

// cancelOnChange cancels a running build when its ImageBuild is deleted or
// its spec changes. It must act from the event handler: the workqueue never
// runs two reconciles of one object at once, so a reconcile that would
// notice the deletion waits for the very build it should cancel.
func (r *ImageBuildReconciler) cancelOnChange() handler.EventHandler {
	return handler.Funcs{
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() || e.ObjectNew.GetDeletionTimestamp() != nil {
				r.inflight.cancel(e.ObjectOld.GetUID())
			}
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.inflight.cancel(e.Object.GetUID())
		},
	}
}

func (r *ImageBuildReconciler) mapConfigMap(ctx context.Context, o client.Object) []reconcile.Request {
	return r.referrers(ctx, o, configMapIndex, false)
}

// mapSecret also wakes the not-Ready ImageBuilds of the namespace that use a
// ServiceAccount: the Secret may be one of its pull secrets (fixing a 401),
// which no index can know without reading the ServiceAccount.
func (r *ImageBuildReconciler) mapSecret(ctx context.Context, o client.Object) []reconcile.Request {
	return r.referrers(ctx, o, secretIndex, true)
}

func (r *ImageBuildReconciler) referrers(ctx context.Context, o client.Object, index string, pullSecrets bool) []reconcile.Request {
	log := ctrl.LoggerFrom(ctx)
	var list kilnv1.ImageBuildList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()}); err != nil {
		log.Error(err, "listing ImageBuilds referencing an object", "index", index, "object", o.GetName())
		return nil
	}
	seen := map[string]bool{}
	var reqs []reconcile.Request
	add := func(ib *kilnv1.ImageBuild) {
		if !seen[ib.Name] {
			seen[ib.Name] = true
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(ib)})
		}
	}
	for i := range list.Items {
		add(&list.Items[i])
	}
	if !pullSecrets {
		return reqs
	}
	var all kilnv1.ImageBuildList
	if err := r.Client.List(ctx, &all, client.InNamespace(o.GetNamespace())); err != nil {
		log.Error(err, "listing ImageBuilds of a namespace")
		return reqs
	}
	for i := range all.Items {
		if ib := &all.Items[i]; ib.Spec.ServiceAccountName != "" && !engine.IsReady(ib) {
			add(ib)
		}
	}
	return reqs
}

// Reconcile runs the named steps: fetch -> suspend -> resolve inputs ->
// decide -> build -> patch status -> events/requeue.
func (r *ImageBuildReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ib, err := r.fetch(ctx, req)
	if err != nil || ib == nil {
		return ctrl.Result{}, err
	}
	if ib.Spec.Suspend {
		ctrl.LoggerFrom(ctx).V(1).Info("suspended, nothing to do")
		return ctrl.Result{}, nil
	}
	res, err := r.resolveRefs(ctx, ib)
	if err != nil {
		return r.fail(ctx, ib, nil, err, r.now())
	}
	d, err := r.decide(ctx, ib, res)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !d.build {
		return r.settle(ctx, ib, d)
	}
	return r.build(ctx, ib, res, d)
}

// fetch returns the object, or nil when it is gone or being deleted (its
// build, if any, was cancelled by cancelOnChange).
func (r *ImageBuildReconciler) fetch(ctx context.Context, req ctrl.Request) (*kilnv1.ImageBuild, error) {
	ib := &kilnv1.ImageBuild{}
	if err := r.Client.Get(ctx, req.NamespacedName, ib); err != nil {
		if apierrors.IsNotFound(err) {
			r.polls.forget(req.String())
			return nil, nil
		}
		return nil, fmt.Errorf("getting ImageBuild: %w", err)
	}
	if ib.DeletionTimestamp != nil {
		r.inflight.cancel(ib.UID)
		return nil, nil
	}
	return ib, nil
}

// decision is the outcome of the decide step.
type decision struct {
	build bool
	why   string
	// polled says the base tag was resolved in this reconcile; movedTo is
	// its new digest when it moved.
	polled  bool
	movedTo string
	// requeueAfter is when the base tag is due for its next poll.
	requeueAfter time.Duration
}

// decide says whether to build. Nothing is built, written or pushed when the
// spec (generation) and every referenced object are unchanged, the last
// build succeeded and the target still holds its digest; a Stalled object
// waits for a change.
func (r *ImageBuildReconciler) decide(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved) (decision, error) {
	st := &ib.Status
	switch {
	case st.ObservedGeneration != ib.Generation:
		return decision{build: true, why: fmt.Sprintf("building generation %d", ib.Generation)}, nil
	case st.InputsFingerprint != res.fingerprint:
		return decision{build: true, why: "a referenced ConfigMap, Secret or ServiceAccount changed"}, nil
	case apimeta.IsStatusConditionTrue(st.Conditions, kilnv1.StalledCondition):
		return decision{}, nil
	case !engine.IsReady(ib) || st.Digest == "":
		return decision{build: true, why: fmt.Sprintf("retrying after %d failed attempts", st.Failures)}, nil
	}
	in, err := r.checkInputs(ctx, ib, res)
	if err != nil {
		return decision{}, err
	}
	d := r.pollBase(ctx, ib, in)
	if d.movedTo != "" && updatePolicy(ib) == kilnv1.BaseUpdateRebuild {
		d.build, d.why = true, fmt.Sprintf("base %s moved to %s", ib.Spec.Base.Image, d.movedTo)
		return d, nil
	}
	held, err := r.Engine.TargetHolds(ctx, &ib.Spec, in, st.Digest)
	if err != nil {
		return decision{}, err
	}
	if !held {
		d.build, d.why = true, fmt.Sprintf("%s no longer holds %s", ib.Spec.Target.Image, st.Digest)
	}
	return d, nil
}

// pollBase re-resolves a tag base (one HEAD, Engine.ResolveBase) when its
// poll is due; this schedule is the only place the controller looks the
// base up, a build uses the engine's own resolution. Digest, archive and
// scratch bases are never polled.
func (r *ImageBuildReconciler) pollBase(ctx context.Context, ib *kilnv1.ImageBuild, in engine.Inputs) decision {
	ref := engine.TagBase(&ib.Spec)
	if ref == "" {
		return decision{}
	}
	interval := pollInterval(ib)
	last := r.polls.get(pollKey(ib))
	if last.IsZero() && ib.Status.Base != nil && ib.Status.Base.CheckedAt != nil {
		last = ib.Status.Base.CheckedAt.Time
	}
	if since := r.now().Sub(last); since < interval {
		return decision{requeueAfter: interval - since}
	}
	now, err := r.Engine.ResolveBase(ctx, &ib.Spec, in)
	if err != nil {
		// A poll that fails says nothing about drift; try again next interval.
		ctrl.LoggerFrom(ctx).Info("polling base failed", "base", ref, "error", err.Error())
		return decision{requeueAfter: interval}
	}
	r.polls.set(pollKey(ib), r.now())
	d := decision{polled: true, requeueAfter: interval}
	if ib.Status.Base == nil || now.Digest != ib.Status.Base.RefDigest {
		d.movedTo = now.Digest
	}
	return d
}

func pollInterval(ib *kilnv1.ImageBuild) time.Duration {
	if b := ib.Spec.Base; b != nil && b.PollInterval != nil && b.PollInterval.Duration > 0 {
		return b.PollInterval.Duration
	}
	return DefaultPollInterval
}

func updatePolicy(ib *kilnv1.ImageBuild) kilnv1.BaseUpdatePolicy {
	if b := ib.Spec.Base; b != nil && b.UpdatePolicy != "" {
		return b.UpdatePolicy
	}
	return kilnv1.BaseUpdateRebuild
}

func pollKey(ib *kilnv1.ImageBuild) string {
	return ib.Namespace + "/" + ib.Name + "/" + string(ib.UID)
}

// settle handles a reconcile that builds nothing: it records base drift
// under policy Report (BaseUpToDate) and requeues for the next base poll.
func (r *ImageBuildReconciler) settle(ctx context.Context, ib *kilnv1.ImageBuild, d decision) (ctrl.Result, error) {
	result := ctrl.Result{RequeueAfter: d.requeueAfter}
	if !d.polled {
		return result, nil
	}
	wasUpToDate := !apimeta.IsStatusConditionFalse(ib.Status.Conditions, kilnv1.BaseUpToDateCondition)
	_, err := r.patchStatus(ctx, ib, func(ib *kilnv1.ImageBuild) {
		if d.movedTo == "" {
			setBaseUpToDate(ib, metav1.ConditionTrue, "UpToDate", fmt.Sprintf("base %s still resolves to %s", ib.Spec.Base.Image, ib.Status.Base.RefDigest))
			return
		}
		setBaseUpToDate(ib, metav1.ConditionFalse, EventBaseChanged, fmt.Sprintf(
			"base %s moved to %s; the pushed image was built from %s (updatePolicy Report: not rebuilt)",
			ib.Spec.Base.Image, d.movedTo, builtFrom(ib)))
	})
	if err != nil {
		return ctrl.Result{}, err
	}
	if d.movedTo != "" && wasUpToDate {
		r.event(ib, corev1.EventTypeNormal, EventBaseChanged, "Poll", "base %s moved to %s; updatePolicy Report: not rebuilt", ib.Spec.Base.Image, d.movedTo)
	}
	return result, nil
}

func builtFrom(ib *kilnv1.ImageBuild) string {
	if ib.Status.Base == nil || ib.Status.Base.RefDigest == "" {
		return "an unknown digest"
	}
	return ib.Status.Base.RefDigest
}

// build runs the engine and records the outcome.
func (r *ImageBuildReconciler) build(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved, d decision) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	log.Info("building", "why", d.why)
	if d.movedTo != "" {
		r.event(ib, corev1.EventTypeNormal, EventBaseChanged, "Poll", "base %s moved to %s; rebuilding", ib.Spec.Base.Image, d.movedTo)
	}
	if err := r.markStarted(ctx, ib, d.why); err != nil {
		return ctrl.Result{}, err
	}
	start := r.now()
	in, err := r.readInputs(ctx, ib, res)
	if err != nil {
		return r.fail(ctx, ib, res, err, start)
	}
	bctx, done := r.inflight.start(ctx, ib.UID)
	defer done()
	r.Metrics.buildStarted()
	result, err := r.Engine.Build(bctx, ib, in, engine.Options{Progress: layerLogger(log)})
	r.Metrics.buildDone()
	if err != nil {
		if bctx.Err() != nil {
			// Deleted, spec changed or shutting down: whoever cancelled has
			// queued what comes next, and the half-built state is not status.
			log.Info("build cancelled", "error", err.Error())
			return ctrl.Result{}, nil
		}
		return r.fail(ctx, ib, res, err, start)
	}
	return r.succeed(ctx, ib, res, result, start)
}

// markStarted sets Reconciling=True (unless a retry already shows it) and
// emits BuildStarted on that transition.
func (r *ImageBuildReconciler) markStarted(ctx context.Context, ib *kilnv1.ImageBuild, why string) error {
	if apimeta.IsStatusConditionTrue(ib.Status.Conditions, kilnv1.ReconcilingCondition) {
		return nil
	}
	if _, err := r.patchStatus(ctx, ib, func(ib *kilnv1.ImageBuild) { engine.MarkReconciling(ib, why) }); err != nil {
		return err
	}
	r.event(ib, corev1.EventTypeNormal, EventBuildStarted, "Build", "%s", why)
	return nil
}

func (r *ImageBuildReconciler) succeed(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved, result *engine.Result, start time.Time) (ctrl.Result, error) {
	now := r.now()
	metricResult := resultPushed
	if result.UpToDate {
		metricResult = resultUpToDate
	}
	r.Metrics.observeBuild(metricResult, now.Sub(start), result.BytesIn, result.BytesOut, result.CacheHits)
	_, err := r.patchStatus(ctx, ib, func(ib *kilnv1.ImageBuild) {
		engine.ApplyResult(ib, result, now)
		ib.Status.InputsFingerprint = res.fingerprint
		recordBase(ib, now)
	})
	if err != nil {
		return ctrl.Result{}, err
	}
	if result.UpToDate {
		r.event(ib, corev1.EventTypeNormal, EventUpToDate, "Push", "%s already holds %s", ib.Spec.Target.Image, ib.Status.Digest)
	} else {
		r.event(ib, corev1.EventTypeNormal, EventPushed, "Push", "pushed %s", ib.Status.Image)
	}
	result2 := ctrl.Result{}
	if engine.TagBase(&ib.Spec) != "" {
		r.polls.set(pollKey(ib), now)
		result2.RequeueAfter = pollInterval(ib)
	}
	return result2, nil
}

// recordBase keeps what drift polling needs besides the reference's own
// digest, which the build's resolution of the base already put in
// status.base.refDigest (it resolved the base when the build started, so a
// move during the build shows up at the next poll, never gets lost): when
// it was resolved. BaseUpToDate is True right after a build.
func recordBase(ib *kilnv1.ImageBuild, now time.Time) {
	if engine.TagBase(&ib.Spec) == "" || ib.Status.Base == nil {
		apimeta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.BaseUpToDateCondition)
		return
	}
	t := metav1.NewTime(now)
	ib.Status.Base.CheckedAt = &t
	setBaseUpToDate(ib, metav1.ConditionTrue, "UpToDate", fmt.Sprintf("built from %s at %s", ib.Spec.Base.Image, builtFrom(ib)))
}

// fail records a failed attempt. Permanent: Stalled, no requeue until the
// spec or a referenced object changes. Transient: Reconciling with the
// error, retried by the rate limiter (or after the server's Retry-After).
func (r *ImageBuildReconciler) fail(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved, buildErr error, start time.Time) (ctrl.Result, error) {
	now := r.now()
	r.Metrics.observeBuild(resultFailed, now.Sub(start), 0, 0, 0)
	var prev metav1.Condition
	if c := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReadyCondition); c != nil {
		prev = *c // a copy: ApplyFailure rewrites the slice in place
	}
	_, err := r.patchStatus(ctx, ib, func(ib *kilnv1.ImageBuild) {
		engine.ApplyFailure(ib, buildErr, now)
		if res != nil {
			ib.Status.InputsFingerprint = res.fingerprint
		}
	})
	if err != nil {
		return ctrl.Result{}, errors.Join(buildErr, err)
	}
	cur := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReadyCondition)
	if prev.Reason != cur.Reason || prev.Message != cur.Message || prev.Status != cur.Status {
		r.event(ib, corev1.EventTypeWarning, EventBuildFailed, "Build", "%s: %s", failure.ReasonOf(buildErr), buildErr.Error())
	}
	if failure.IsPermanent(buildErr) {
		ctrl.LoggerFrom(ctx).Info("build failed permanently", "reason", failure.ReasonOf(buildErr), "error", buildErr.Error())
		return ctrl.Result{}, nil
	}
	if after := failure.RetryAfterOf(buildErr); after > 0 {
		return ctrl.Result{RequeueAfter: after}, nil
	}
	return ctrl.Result{}, buildErr
}

// patchStatus applies mutate and patches status only when it changed.
func (r *ImageBuildReconciler) patchStatus(ctx context.Context, ib *kilnv1.ImageBuild, mutate func(*kilnv1.ImageBuild)) (bool, error) {
	before := ib.DeepCopy()
	mutate(ib)
	if equality.Semantic.DeepEqual(before.Status, ib.Status) {
		return false, nil
	}
	if err := r.Client.Status().Patch(ctx, ib, client.MergeFrom(before)); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil // deleted meanwhile: nothing left to record
		}
		return false, fmt.Errorf("patching status: %w", err)
	}
	return true, nil
}

// checkInputs reads only what registry access needs (pull secrets and the
// CA bundle, never layer data) for the checks the controller asks the
// engine for (TargetHolds, ResolveBase).
func (r *ImageBuildReconciler) checkInputs(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved) (engine.Inputs, error) {
	in := engine.Inputs{ConfigMaps: map[string]map[string][]byte{}, Secrets: map[string]map[string][]byte{}}
	kc, err := r.keychain(ctx, ib.Namespace, res.pullSecrets)
	if err != nil {
		return in, err
	}
	in.Keychain = kc
	if cb := ib.Spec.Target.CABundle; cb != nil {
		if err := r.readCABundle(ctx, ib.Namespace, cb, in); err != nil {
			return in, err
		}
	}
	return in, nil
}

// readCABundle puts the object holding the CA bundle into in.
func (r *ImageBuildReconciler) readCABundle(ctx context.Context, ns string, cb *kilnv1.CABundleSource, in engine.Inputs) error {
	switch {
	case cb.ConfigMap != nil:
		var cm corev1.ConfigMap
		if _, err := r.getDirect(ctx, ns, cb.ConfigMap.Name, &cm); err != nil {
			return fmt.Errorf("reading CA bundle configMap %q: %w", cb.ConfigMap.Name, err)
		}
		in.ConfigMaps[cb.ConfigMap.Name] = engine.ConfigMapData(&cm)
	case cb.Secret != nil:
		var sec corev1.Secret
		if _, err := r.getDirect(ctx, ns, cb.Secret.Name, &sec); err != nil {
			return fmt.Errorf("reading CA bundle secret %q: %w", cb.Secret.Name, err)
		}
		in.Secrets[cb.Secret.Name] = engine.SecretData(&sec)
	}
	return nil
}

func setBaseUpToDate(ib *kilnv1.ImageBuild, s metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&ib.Status.Conditions, metav1.Condition{
		Type: kilnv1.BaseUpToDateCondition, Status: s, Reason: reason, Message: msg, ObservedGeneration: ib.Generation,
	})
}

func (r *ImageBuildReconciler) event(ib *kilnv1.ImageBuild, eventType, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(ib, nil, eventType, reason, action, note, args...)
	}
}

func (r *ImageBuildReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *ImageBuildReconciler) metadataReader() client.Reader {
	if r.MetadataReader != nil {
		return r.MetadataReader
	}
	return r.Client
}

// layerLogger logs each finished layer with its name, so that logs carry
// namespace/name (from controller-runtime) and layer.
func layerLogger(log logr.Logger) func(engine.Progress) {
	return func(p engine.Progress) {
		if p.Done {
			log.V(1).Info("layer done", "layer", p.Layer, "bytesIn", p.BytesIn, "bytesOut", p.BytesOut)
		}
	}
}
