package controllers

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
	"sigs.k8s.io/controller-runtime/pkg/source"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/failure"
)

// The annotations of Flux's manual trigger (`flux reconcile`, or kubectl
// annotate): a new requestedAt reconciles now; forceAt equal to it also
// rebuilds and pushes when nothing changed.
const (
	RequestedAtAnnotation = "reconcile.fluxcd.io/requestedAt"
	ForceAtAnnotation     = "reconcile.fluxcd.io/forceAt"
)

// Defaults of the worker counts.
const (
	DefaultMaxConcurrentReconciles = 8
	DefaultMaxConcurrentBuilds     = 4
)

// ImageBuildReconciler reconciles ImageBuild objects: it resolves what the
// spec references in the object's namespace, verifies the target, hands
// builds to the build queue and records every outcome in status. It holds
// no build logic of its own.
type ImageBuildReconciler struct {
	// Client reads ImageBuilds from the cache and patches their status.
	Client client.Client
	// APIReader is uncached: ServiceAccounts and ConfigMap/Secret data are
	// read with direct GETs so the manager never caches Secret data.
	APIReader client.Reader
	// MetadataReader reads ConfigMap/Secret metadata (uid, resourceVersion)
	// from the metadata-only informers; defaults to Client.
	MetadataReader client.Reader
	// RESTMapper tells whether the Flux source kinds are served, and in
	// which version; default the manager's.
	RESTMapper apimeta.RESTMapper
	// SourceKindsRecheck is how often Flux source kinds that were not
	// served are looked for again (default DefaultSourceKindsRecheck).
	SourceKindsRecheck time.Duration
	// Engine is shared by all builds: one blob store, one single-flight.
	Engine   *engine.Engine
	Recorder events.EventRecorder
	Metrics  *Metrics
	// Now is the clock for status timestamps and schedules; default time.Now.
	Now func() time.Time
	// MaxConcurrentReconciles is the number of reconcile workers
	// (default 8); MaxConcurrentBuilds the number of build slots of the
	// queue (default 4). Workers never wait for a slot.
	MaxConcurrentReconciles int
	MaxConcurrentBuilds     int
	// Queue runs the builds; SetupWithManager creates it when nil.
	Queue *BuildQueue
	// BackoffBase is the first retry delay after a failure (default
	// DefaultBackoffBase); it doubles per consecutive failure up to
	// spec.interval.
	BackoffBase time.Duration
	// IntervalOf overrides spec.interval, which the CRD keeps at 1m or
	// more. For tests only: nil in production.
	IntervalOf func(*kilnv1.ImageBuild) (time.Duration, bool)

	builds builds
	memos  memos
	// done carries "a build changed state" from the queue's jobs to the
	// workqueue (source.Channel): the job never writes status itself.
	done chan event.GenericEvent
	// sources adds the Flux source watches once their kinds are served.
	sources *sourceWatcher
}

// SetupWithManager registers the field indexes, the build queue and the
// watches: ImageBuilds (spec changes and the manual-trigger annotations),
// ConfigMaps/Secrets metadata-only (mapped to the ImageBuilds of their
// namespace that use them) and the queue's job events.
func (r *ImageBuildReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &kilnv1.ImageBuild{}, configMapIndex, indexConfigMaps); err != nil {
		return fmt.Errorf("indexing ImageBuilds by ConfigMap: %w", err)
	}
	if err := idx.IndexField(ctx, &kilnv1.ImageBuild{}, secretIndex, indexSecrets); err != nil {
		return fmt.Errorf("indexing ImageBuilds by Secret: %w", err)
	}
	if err := idx.IndexField(ctx, &kilnv1.ImageBuild{}, sourceRefIndex, indexSourceRefs); err != nil {
		return fmt.Errorf("indexing ImageBuilds by Flux source: %w", err)
	}
	if r.RESTMapper == nil {
		r.RESTMapper = mgr.GetRESTMapper()
	}
	if r.Queue == nil {
		r.Queue = NewBuildQueue(orDefault(r.MaxConcurrentBuilds, DefaultMaxConcurrentBuilds), r.Metrics)
	}
	if err := mgr.Add(r.Queue); err != nil {
		return fmt.Errorf("adding the build queue: %w", err)
	}
	r.done = make(chan event.GenericEvent, 1024)
	c, err := ctrl.NewControllerManagedBy(mgr).
		Named("imagebuild").
		// Status patches do not bump the generation: without the predicate
		// every status write would come back as one more reconcile. The
		// manual-trigger annotations do not bump it either.
		For(&kilnv1.ImageBuild{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, triggerAnnotationsChanged()))).
		Watches(&kilnv1.ImageBuild{}, r.cancelOnChange()).
		WatchesMetadata(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.mapConfigMap)).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.mapSecret)).
		WatchesRawSource(source.Channel(r.done, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: orDefault(r.MaxConcurrentReconciles, DefaultMaxConcurrentReconciles)}).
		Build(r)
	if err != nil {
		return err
	}
	// The Flux kinds are watched only once served (sourceWatcher): the
	// manager must start without the Flux CRDs.
	r.sources = &sourceWatcher{
		ctrl: c, cache: mgr.GetCache(), mapper: r.RESTMapper, mapFunc: r.mapSource,
		interval: orDefaultDuration(r.SourceKindsRecheck, DefaultSourceKindsRecheck),
		watched:  map[kilnv1.SourceKind]bool{},
	}
	if err := mgr.Add(r.sources); err != nil {
		return fmt.Errorf("adding the Flux source watcher: %w", err)
	}
	return nil
}

func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// triggerAnnotationsChanged lets an update through when requestedAt or
// forceAt changed.
func triggerAnnotationsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations()
			return o[RequestedAtAnnotation] != n[RequestedAtAnnotation] || o[ForceAtAnnotation] != n[ForceAtAnnotation]
		},
	}
}

// cancelOnChange cancels a queued or running build when its ImageBuild is
// deleted or its spec changes. It acts from the event handler so that the
// slot frees at once, whatever the workqueue is doing.
func (r *ImageBuildReconciler) cancelOnChange() handler.EventHandler {
	return handler.Funcs{
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			n := e.ObjectNew
			uid := n.GetUID()
			if n.GetDeletionTimestamp() != nil {
				uid = ""
			}
			r.builds.cancelStale(r.Queue, client.ObjectKeyFromObject(n), uid, n.GetGeneration())
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.builds.cancelStale(r.Queue, client.ObjectKeyFromObject(e.Object), "", 0)
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

// Reconcile runs the named steps (fetch, resolve inputs, record a finished
// build, decide, verify target, poll base, queue a build); each leaves its
// result or its error in the outcome, and one deferred summary turns the
// outcome into conditions, events, one status patch and the requeue.
func (r *ImageBuildReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, err error) {
	ib, err := r.fetch(ctx, req)
	if err != nil || ib == nil {
		return ctrl.Result{}, err
	}
	if ib.Spec.Suspend {
		ctrl.LoggerFrom(ctx).V(1).Info("suspended, nothing to do")
		return ctrl.Result{}, nil
	}
	o := &outcome{memo: r.memos.get(req.NamespacedName, ib.UID), request: pendingRequest(ib)}
	before := ib.DeepCopy()
	defer func() { result, err = r.summarize(ctx, before, ib, o) }()
	r.steps(ctx, ib, o)
	return ctrl.Result{}, nil
}

// steps runs the sub-steps in order until one fails or decides.
func (r *ImageBuildReconciler) steps(ctx context.Context, ib *kilnv1.ImageBuild, o *outcome) {
	res, err := r.resolveInputs(ctx, ib, o.memo)
	if err != nil {
		o.fail(stepResolve, err)
		return
	}
	o.attempt = attemptKey(ib, res.fingerprint)
	if r.recordBuild(ib, o) {
		return
	}
	d, err := r.decide(ctx, ib, res, o)
	if err != nil {
		o.fail(d.step, err)
		return
	}
	if !d.build {
		return
	}
	if stale, err := r.isStale(ctx, ib); err != nil || stale {
		o.stale = true
		return
	}
	r.submit(ctx, ib, res, d, o)
}

// isStale says whether the cached ib is older than the API server's. A
// build is a side effect the status patch's optimistic lock cannot undo, so
// it is decided on the current object: right after this controller's own
// status write (a build recorded, a request handled) the cache may still
// show the status before it, which would start the same build again.
func (r *ImageBuildReconciler) isStale(ctx context.Context, ib *kilnv1.ImageBuild) (bool, error) {
	cur := &metav1.PartialObjectMetadata{}
	cur.SetGroupVersionKind(kilnv1.GroupVersion.WithKind("ImageBuild"))
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(ib), cur); err != nil {
		return false, err
	}
	return cur.ResourceVersion != ib.ResourceVersion, nil
}

// fetch returns the object, or nil when it is gone or being deleted (its
// build, if any, is cancelled).
func (r *ImageBuildReconciler) fetch(ctx context.Context, req ctrl.Request) (*kilnv1.ImageBuild, error) {
	ib := &kilnv1.ImageBuild{}
	if err := r.Client.Get(ctx, req.NamespacedName, ib); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return nil, nil
		}
		return nil, fmt.Errorf("getting ImageBuild: %w", err)
	}
	if ib.DeletionTimestamp != nil {
		r.forget(req.NamespacedName)
		return nil, nil
	}
	return ib, nil
}

func (r *ImageBuildReconciler) forget(key types.NamespacedName) {
	r.builds.cancelStale(r.Queue, key, "", 0)
	r.memos.forget(key)
}

// Steps, as named in status messages and logs.
const (
	stepResolve = "resolving inputs"
	stepVerify  = "verifying the target"
	stepBuild   = "building"
)

// pendingRequest returns the requestedAt value not handled yet, or "".
func pendingRequest(ib *kilnv1.ImageBuild) string {
	v := ib.Annotations[RequestedAtAnnotation]
	if v == "" || v == ib.Status.LastHandledReconcileAt {
		return ""
	}
	return v
}

// forceRequested says that the pending request also asks for a push.
func forceRequested(ib *kilnv1.ImageBuild, request string) bool {
	return request != "" && ib.Annotations[ForceAtAnnotation] == request
}

// attemptKey identifies what an attempt tried: a failed attempt is retried
// after its backoff, an attempt with another key (the spec, an input or the
// request changed) at once.
func attemptKey(ib *kilnv1.ImageBuild, fingerprint string) string {
	return fmt.Sprintf("%s/%d/%s/%s", ib.UID, ib.Generation, fingerprint, ib.Annotations[RequestedAtAnnotation])
}

// recordBuild takes key's job and puts a finished one into ib's status. It
// returns true when the reconcile has nothing more to decide: the job is
// still queued or running, or the failure it recorded waits for its
// backoff. A job of another generation is cancelled (cancelStale) and a
// failure of an attempt that is no longer current is dropped: what changed
// is built next.
func (r *ImageBuildReconciler) recordBuild(ib *kilnv1.ImageBuild, o *outcome) bool {
	key := client.ObjectKeyFromObject(ib)
	if r.builds.cancelStale(r.Queue, key, ib.UID, ib.Generation) {
		return false
	}
	j, ok := r.builds.current(key)
	if !ok {
		return false
	}
	if !j.done {
		o.pending = &j
		if pos, ok := r.Queue.Position(key); ok {
			o.position = pos
		}
		return true
	}
	if j.err != nil && j.attempt != o.attempt {
		r.builds.recorded(key, j.uid, j.generation, j.attempt)
		return false
	}
	o.recorded = &j
	if j.err != nil {
		o.fail(stepBuild, j.err)
		o.failedFingerprint = j.fingerprint
		return true
	}
	r.applyResult(ib, &j, o)
	return false
}

// applyResult writes a successful build into status.
func (r *ImageBuildReconciler) applyResult(ib *kilnv1.ImageBuild, j *job, o *outcome) {
	handled := ib.Status.LastHandledReconcileAt
	engine.ApplyResult(ib, j.result, j.end) // replaces status but for conditions, history, tags
	st := &ib.Status
	st.LastHandledReconcileAt = handled
	st.InputsFingerprint = j.fingerprint
	st.Failures = 0
	st.QueuePosition = 0
	if j.force {
		st.LastHandledReconcileAt = j.requestedAt
		o.request = pendingRequest(ib) // handled now: decide must not force again
	}
	recordBase(ib, j.end)
	o.built = j.result
	o.memo.verifiedAt, o.memo.polledAt = j.end, j.end
	o.memo.retryKey, o.memo.retryAt = "", time.Time{}
}

// decision is the outcome of the decide step.
type decision struct {
	build bool
	why   string
	force bool
	// step names what failed when decide returns an error.
	step string
}

// decide says whether to build. Nothing is built, written or pushed when
// the spec (generation) and the content of every input are unchanged, the
// last build succeeded and the target still holds its digest; a Stalled
// object waits for a change or a request; a failed attempt waits for its
// backoff.
func (r *ImageBuildReconciler) decide(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved, o *outcome) (decision, error) {
	st := &ib.Status
	m := o.memo
	if m.retryKey == o.attempt && r.now().Before(m.retryAt) {
		o.waitUntil = m.retryAt
		return decision{}, nil
	}
	switch {
	case st.ObservedGeneration != ib.Generation:
		return decision{build: true, why: fmt.Sprintf("building generation %d", ib.Generation)}, nil
	case st.InputsFingerprint != res.fingerprint:
		return decision{build: true, why: "the content of a referenced ConfigMap, Secret or ServiceAccount changed"}, nil
	case forceRequested(ib, o.request):
		return decision{build: true, force: true, why: "rebuilding and pushing on request (" + ForceAtAnnotation + ")"}, nil
	case apimeta.IsStatusConditionTrue(st.Conditions, kilnv1.StalledCondition):
		if o.request != "" {
			return decision{build: true, why: "retrying on request (" + RequestedAtAnnotation + ")"}, nil
		}
		return decision{}, nil
	case st.Digest == "":
		return decision{build: true, why: "no image recorded"}, nil
	}
	return r.check(ctx, ib, res, o)
}

// check is the periodic part of decide for a built object: poll a tag base
// and verify the target when due (every interval, on request, and while the
// object is not Ready).
func (r *ImageBuildReconciler) check(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved, o *outcome) (decision, error) {
	now, m := r.now(), o.memo
	urgent := o.request != "" || !engine.IsReady(ib)
	verifyDue := urgent || !now.Before(m.verifiedAt.Add(r.interval(ib)))
	pollDue := engine.TagBase(&ib.Spec) != "" && (urgent || !now.Before(r.lastPoll(ib, m).Add(r.pollInterval(ib))))
	if !verifyDue && !pollDue {
		return decision{}, nil
	}
	in, err := r.checkInputs(ctx, ib, res)
	if err != nil {
		return decision{step: stepVerify}, err
	}
	if pollDue {
		if d := r.pollBase(ctx, ib, in, o); d.build {
			return d, nil
		}
	}
	if !verifyDue {
		return decision{}, nil
	}
	held, err := r.Engine.TargetHolds(ctx, &ib.Spec, in, ib.Status.Digest)
	if err != nil {
		return decision{step: stepVerify}, err
	}
	if !held {
		return decision{build: true, why: fmt.Sprintf("%s no longer holds %s", ib.Spec.Target.Image, ib.Status.Digest)}, nil
	}
	m.verifiedAt = now
	o.verified = true
	return decision{}, nil
}

// pollBase re-resolves a tag base (one HEAD, Engine.ResolveBase). This
// schedule is the only place the controller looks the base up; a build uses
// the engine's own resolution. A poll that fails says nothing about drift:
// it shows in BaseUpToDate=Unknown and is made again at the next poll.
func (r *ImageBuildReconciler) pollBase(ctx context.Context, ib *kilnv1.ImageBuild, in engine.Inputs, o *outcome) decision {
	o.memo.polledAt = r.now()
	o.polled = true
	now, err := r.Engine.ResolveBase(ctx, &ib.Spec, in)
	if err != nil {
		o.pollErr = err
		return decision{}
	}
	if ib.Status.Base != nil && now.Digest == ib.Status.Base.RefDigest {
		return decision{}
	}
	o.baseMovedTo = now.Digest
	if updatePolicy(ib) == kilnv1.BaseUpdateRebuild {
		return decision{build: true, why: fmt.Sprintf("base %s moved to %s", ib.Spec.Base.Image, now.Digest)}
	}
	return decision{}
}

func (r *ImageBuildReconciler) lastPoll(ib *kilnv1.ImageBuild, m *memo) time.Time {
	if m.polledAt.IsZero() && ib.Status.Base != nil && ib.Status.Base.CheckedAt != nil {
		// After a restart: the build's own resolution of the base.
		return ib.Status.Base.CheckedAt.Time
	}
	return m.polledAt
}

// interval is the object's verification period, jittered.
func (r *ImageBuildReconciler) interval(ib *kilnv1.ImageBuild) time.Duration {
	return jittered(r.baseInterval(ib), ib.UID)
}

// baseInterval is spec.interval (or the test override), unjittered: the
// cap of the retry backoff.
func (r *ImageBuildReconciler) baseInterval(ib *kilnv1.ImageBuild) time.Duration {
	if r.IntervalOf != nil {
		if d, ok := r.IntervalOf(ib); ok {
			return d
		}
	}
	if ib.Spec.Interval != nil && ib.Spec.Interval.Duration > 0 {
		return ib.Spec.Interval.Duration
	}
	return DefaultInterval
}

// pollInterval is base.pollInterval when set, else spec.interval; jittered.
func (r *ImageBuildReconciler) pollInterval(ib *kilnv1.ImageBuild) time.Duration {
	if b := ib.Spec.Base; b != nil && b.PollInterval != nil && b.PollInterval.Duration > 0 {
		return jittered(b.PollInterval.Duration, ib.UID)
	}
	return r.interval(ib)
}

func updatePolicy(ib *kilnv1.ImageBuild) kilnv1.BaseUpdatePolicy {
	if b := ib.Spec.Base; b != nil && b.UpdatePolicy != "" {
		return b.UpdatePolicy
	}
	return kilnv1.BaseUpdateRebuild
}

// submit hands a build to the queue and returns at once: the reconcile
// worker never waits for a slot.
func (r *ImageBuildReconciler) submit(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved, d decision, o *outcome) {
	ctrl.LoggerFrom(ctx).Info("queueing a build", "why", d.why)
	j := &job{
		uid: ib.UID, generation: ib.Generation, attempt: o.attempt, why: d.why,
		// A build decided for another reason also serves a pending force.
		force: d.force || forceRequested(ib, o.request), requestedAt: ib.Annotations[RequestedAtAnnotation],
	}
	key := client.ObjectKeyFromObject(ib)
	o.position = r.builds.submit(r.Queue, key, j, r.buildJob(ib.DeepCopy(), res, j))
	o.pending, o.submitted = j, true
}

// buildJob is the queue's job: read the inputs, build, and hand the
// outcome back through builds and the done channel. It announces its start
// so that status moves from Queued to building.
func (r *ImageBuildReconciler) buildJob(ib *kilnv1.ImageBuild, res *resolved, j *job) func(context.Context) {
	key := client.ObjectKeyFromObject(ib)
	log := ctrl.Log.WithName("build").WithValues("ImageBuild", key.String(), "generation", ib.Generation)
	return func(ctx context.Context) {
		r.notify(ctx, key)
		start := r.now()
		in, fingerprint, err := r.buildInputs(ctx, ib, res)
		var result *engine.Result
		if err == nil {
			r.Metrics.buildStarted()
			result, err = r.Engine.Build(ctx, ib, in, engine.Options{Force: j.force, Progress: layerLogger(log)})
			r.Metrics.buildDone()
		}
		end := r.now()
		if err != nil && ctx.Err() != nil {
			// Deleted, spec changed or shutting down: whoever cancelled has
			// queued what comes next, and a half-built state is not status.
			log.Info("build cancelled", "error", err.Error())
			r.builds.drop(key, j)
			r.notify(ctx, key)
			return
		}
		r.observe(result, err, end.Sub(start))
		r.builds.finish(key, j, func(j *job) {
			j.result, j.err, j.fingerprint, j.start, j.end = result, err, fingerprint, start, end
		})
		r.notify(ctx, key)
	}
}

func (r *ImageBuildReconciler) observe(result *engine.Result, err error, d time.Duration) {
	switch {
	case err != nil:
		r.Metrics.observeBuild(resultFailed, d, 0, 0, 0)
	case result.UpToDate:
		r.Metrics.observeBuild(resultUpToDate, d, result.BytesIn, result.BytesOut, result.CacheHits)
	default:
		r.Metrics.observeBuild(resultPushed, d, result.BytesIn, result.BytesOut, result.CacheHits)
	}
}

// notify queues a reconcile of key. A cancelled ctx (shutdown) drops it.
func (r *ImageBuildReconciler) notify(ctx context.Context, key types.NamespacedName) {
	obj := &kilnv1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	select {
	case r.done <- event.GenericEvent{Object: obj}:
	case <-ctx.Done():
	}
}

// recordBase keeps what drift polling needs besides the reference's own
// digest, which the build's resolution of the base already put in
// status.base.refDigest: when it was resolved. BaseUpToDate is True right
// after a build.
func recordBase(ib *kilnv1.ImageBuild, now time.Time) {
	if engine.TagBase(&ib.Spec) == "" || ib.Status.Base == nil {
		apimeta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.BaseUpToDateCondition)
		return
	}
	t := metav1.NewTime(now)
	ib.Status.Base.CheckedAt = &t
	setBaseUpToDate(ib, metav1.ConditionTrue, engine.ReasonUpToDate, baseUpToDateMessage(ib))
}

// baseUpToDateMessage is the one message of BaseUpToDate=True, after a build
// and after every poll that finds the base where it was: a poll that
// changes nothing writes nothing.
func baseUpToDateMessage(ib *kilnv1.ImageBuild) string {
	return fmt.Sprintf("base %s resolves to %s, the digest the image was built from", ib.Spec.Base.Image, builtFrom(ib))
}

func builtFrom(ib *kilnv1.ImageBuild) string {
	if ib.Status.Base == nil || ib.Status.Base.RefDigest == "" {
		return "an unknown digest"
	}
	return ib.Status.Base.RefDigest
}

func setBaseUpToDate(ib *kilnv1.ImageBuild, s metav1.ConditionStatus, reason, msg string) {
	setCondition(ib, kilnv1.BaseUpToDateCondition, s, reason, msg)
}

func setCondition(ib *kilnv1.ImageBuild, t string, s metav1.ConditionStatus, reason, msg string) {
	if len(msg) > 32000 {
		msg = msg[:32000] + "..."
	}
	apimeta.SetStatusCondition(&ib.Status.Conditions, metav1.Condition{
		Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: ib.Generation,
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

// layerLogger logs each finished layer with its name.
func layerLogger(log logr.Logger) func(engine.Progress) {
	return func(p engine.Progress) {
		if p.Done {
			log.V(1).Info("layer done", "layer", p.Layer, "bytesIn", p.BytesIn, "bytesOut", p.BytesOut)
		}
	}
}

// failureReason is err's reason as a condition reason.
func failureReason(err error) string { return string(failure.ReasonOf(err)) }
