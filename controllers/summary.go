package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/failure"
)

// Event reasons besides the failure reasons (a failure's Warning event has
// the failure's reason, e.g. BaseNotFound). Every event marks a transition:
// none repeats while a state lasts (retries included).
const (
	EventBuildStarted = "BuildStarted"
	EventPushed       = "Pushed"
	EventUpToDate     = "UpToDate"
	EventBaseChanged  = "BaseChanged"
	// EventSigned and EventAttested: signatures / attestations were
	// written (not when the registry already held them).
	EventSigned   = "Signed"
	EventAttested = "Attested"
	// EventVerified: Ready again after a failure, without a build (the
	// target was found holding the digest once more).
	EventVerified = "Verified"
)

// Condition reasons of the controller besides engine's and the failures'.
const (
	// ReasonQueued: Reconciling=True while the build waits for a slot
	// (status.queuePosition).
	ReasonQueued = "Queued"
)

// outcome is what the steps of one reconcile found and did; summarize turns
// it into status, events and the requeue.
type outcome struct {
	memo *memo
	// request is the requestedAt value not handled yet, or "".
	request string
	// attempt is the attemptKey of this reconcile.
	attempt string

	// err is the error of the step that failed, step its name;
	// failedFingerprint the inputs a failed build read.
	err               error
	step              string
	failedFingerprint string

	// pending is the queued or running job, position its place in the
	// queue (0: running); submitted says this reconcile queued it.
	pending   *job
	position  int
	submitted bool
	// recorded is the finished job this reconcile took; built its result
	// when it succeeded.
	recorded *job
	built    *engine.Result

	// verified: the target was checked and holds status.digest.
	verified bool
	// polled: the base tag was resolved (to baseMovedTo when it moved), or
	// failed to with pollErr.
	polled      bool
	baseMovedTo string
	pollErr     error
	// waitUntil is set when a failed attempt waits for its backoff.
	waitUntil time.Time
	// stale: a build was due but the cached object is behind the API
	// server; nothing is written and the reconcile runs again.
	stale bool
}

// staleRetry is how soon a reconcile that found its cache stale runs again
// (the informer catches up within moments; a status-only update would not
// pass the predicates to wake it).
const staleRetry = 100 * time.Millisecond

func (o *outcome) fail(step string, err error) { o.step, o.err = step, err }

// summarize is the deferred end of every reconcile: it computes the
// conditions from the outcome, patches status once (only when it changed,
// with an optimistic lock: a reconcile that decided from a stale cache is
// retried instead of overwriting), emits the events of the transitions it
// wrote and returns the requeue.
func (r *ImageBuildReconciler) summarize(ctx context.Context, before, ib *kilnv1.ImageBuild, o *outcome) (ctrl.Result, error) {
	if o.stale {
		return ctrl.Result{RequeueAfter: staleRetry}, nil
	}
	now := r.now()
	r.setConditions(ib, o, now)
	r.markRequestHandled(ib, o)
	if !equality.Semantic.DeepEqual(before.Status, ib.Status) {
		err := r.Client.Status().Patch(ctx, ib, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
		switch {
		case apierrors.IsNotFound(err):
			return ctrl.Result{}, nil // deleted meanwhile: nothing left to record
		case err != nil:
			// A conflict included: the next reconcile reads the object
			// again; a build result stays in builds until recorded.
			return ctrl.Result{}, fmt.Errorf("patching status: %w", err)
		}
	}
	if j := o.recorded; j != nil {
		r.builds.recorded(client.ObjectKeyFromObject(ib), j.uid, j.generation, j.attempt)
	}
	if o.err != nil {
		ctrl.LoggerFrom(ctx).Info("reconcile failed", "step", o.step, "reason", failureReason(o.err),
			"policy", policyOf(o.err).String(), "failures", ib.Status.Failures, "error", o.err.Error())
	}
	r.emitEvents(before, ib, o)
	return ctrl.Result{RequeueAfter: r.requeueAfter(ib, o, now)}, nil
}

// setConditions writes Ready, Reconciling, Stalled and BaseUpToDate.
func (r *ImageBuildReconciler) setConditions(ib *kilnv1.ImageBuild, o *outcome, now time.Time) {
	switch {
	case o.err != nil:
		r.applyFailure(ib, o, now)
	case o.pending != nil:
		markBuilding(ib, o)
	case o.built != nil:
		// engine.ApplyResult set Ready=True and removed the others.
	case o.verified:
		markReady(ib, o)
	}
	if o.polled && o.err == nil {
		setBaseCondition(ib, o)
	}
}

// applyFailure records a failed step by the error policy.
func (r *ImageBuildReconciler) applyFailure(ib *kilnv1.ImageBuild, o *outcome, now time.Time) {
	st := &ib.Status
	st.Failures++
	st.QueuePosition = 0
	reason, msg := failureReason(o.err), o.err.Error()
	setCondition(ib, kilnv1.ReadyCondition, metav1.ConditionFalse, reason, msg)
	m := o.memo
	policy := policyOf(o.err)
	if policy == stall {
		setCondition(ib, kilnv1.StalledCondition, metav1.ConditionTrue, reason, msg)
		apimeta.RemoveStatusCondition(&st.Conditions, kilnv1.ReconcilingCondition)
		// A stall concludes the generation (kstatus: Failed) for these
		// inputs: a change of either retries.
		st.ObservedGeneration = ib.Generation
		if o.failedFingerprint != "" {
			st.InputsFingerprint = o.failedFingerprint
		}
		if j := o.recorded; j != nil && j.force {
			st.LastHandledReconcileAt = j.requestedAt
		}
		m.retryKey, m.retryAt = "", time.Time{}
		return
	}
	// Retried: the generation is not concluded (observedGeneration stays,
	// kstatus: InProgress), the message says how, the count is
	// status.failures.
	apimeta.RemoveStatusCondition(&st.Conditions, kilnv1.StalledCondition)
	note := "retrying with backoff"
	if policy == retryExternal {
		note = fmt.Sprintf("retrying with a backoff that grows to spec.interval (%s): this heals when what is missing appears", r.baseInterval(ib))
	}
	setCondition(ib, kilnv1.ReconcilingCondition, metav1.ConditionTrue, reason, note)
	delay := backoff(orDefaultDuration(r.BackoffBase, DefaultBackoffBase), st.Failures, retryLimit(policy, r.baseInterval(ib)))
	delay = max(delay, failure.RetryAfterOf(o.err))
	m.retryKey, m.retryAt = o.attempt, now.Add(delay)
}

func orDefaultDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// markBuilding shows a queued or running build: Reconciling=True (Queued
// with status.queuePosition, or Progressing), Ready=Unknown unless a
// failure is being retried (Ready=False keeps its reason, so a retry does
// not flap Ready).
func markBuilding(ib *kilnv1.ImageBuild, o *outcome) {
	st := &ib.Status
	reason, msg := engine.ReasonProgressing, o.pending.why
	st.QueuePosition = 0
	if o.position > 0 {
		reason, msg = ReasonQueued, "waiting for a build slot"
		st.QueuePosition = int32(o.position)
	}
	setCondition(ib, kilnv1.ReconcilingCondition, metav1.ConditionTrue, reason, msg)
	if !apimeta.IsStatusConditionFalse(st.Conditions, kilnv1.ReadyCondition) {
		setCondition(ib, kilnv1.ReadyCondition, metav1.ConditionUnknown, reason, o.pending.why)
	}
	apimeta.RemoveStatusCondition(&st.Conditions, kilnv1.StalledCondition)
}

// markReady makes a verified object Ready with the message of its last
// build: recovering from a failed check restores the condition as it was.
func markReady(ib *kilnv1.ImageBuild, o *outcome) {
	st := &ib.Status
	reason, msg := engine.ReasonSucceeded, fmt.Sprintf("pushed %s", st.Image)
	if st.LastBuild != nil && st.LastBuild.Result == kilnv1.ResultUpToDate {
		reason, msg = engine.ReasonUpToDate, fmt.Sprintf("%s already holds %s", ib.Spec.Target.Image, st.Digest)
	}
	setCondition(ib, kilnv1.ReadyCondition, metav1.ConditionTrue, reason, msg)
	apimeta.RemoveStatusCondition(&st.Conditions, kilnv1.ReconcilingCondition)
	apimeta.RemoveStatusCondition(&st.Conditions, kilnv1.StalledCondition)
	st.Failures, st.QueuePosition = 0, 0
	o.memo.retryKey, o.memo.retryAt = "", time.Time{}
}

// setBaseCondition records a base poll: True with the one stable message
// when the base is where it was, False under updatePolicy Report when it
// moved, Unknown with the failure's reason when the poll failed. A move
// under Rebuild shows as the build it started.
func setBaseCondition(ib *kilnv1.ImageBuild, o *outcome) {
	switch {
	case o.pollErr != nil:
		setBaseUpToDate(ib, metav1.ConditionUnknown, failureReason(o.pollErr), "polling the base: "+o.pollErr.Error())
	case o.baseMovedTo == "":
		setBaseUpToDate(ib, metav1.ConditionTrue, engine.ReasonUpToDate, baseUpToDateMessage(ib))
	case updatePolicy(ib) == kilnv1.BaseUpdateReport:
		setBaseUpToDate(ib, metav1.ConditionFalse, EventBaseChanged, fmt.Sprintf(
			"base %s moved to %s; the pushed image was built from %s (updatePolicy Report: not rebuilt)",
			ib.Spec.Base.Image, o.baseMovedTo, builtFrom(ib)))
	}
}

// markRequestHandled records a handled requestedAt. A request that finds
// a build in flight waits for it (the next reconcile handles it); a forced
// one is handled by the build that serves it (applyResult, or a stall).
func (r *ImageBuildReconciler) markRequestHandled(ib *kilnv1.ImageBuild, o *outcome) {
	if o.request == "" || forceRequested(ib, o.request) || (o.pending != nil && !o.submitted) {
		return
	}
	ib.Status.LastHandledReconcileAt = o.request
}

// emitEvents emits one event per transition written by this reconcile.
func (r *ImageBuildReconciler) emitEvents(before, ib *kilnv1.ImageBuild, o *outcome) {
	retrying := apimeta.IsStatusConditionTrue(before.Status.Conditions, kilnv1.ReconcilingCondition)
	if o.baseMovedTo != "" && !retrying {
		if updatePolicy(ib) == kilnv1.BaseUpdateRebuild {
			r.event(ib, corev1.EventTypeNormal, EventBaseChanged, "Poll", "base %s moved to %s; rebuilding", ib.Spec.Base.Image, o.baseMovedTo)
		} else if !apimeta.IsStatusConditionFalse(before.Status.Conditions, kilnv1.BaseUpToDateCondition) {
			r.event(ib, corev1.EventTypeNormal, EventBaseChanged, "Poll", "base %s moved to %s; updatePolicy Report: not rebuilt", ib.Spec.Base.Image, o.baseMovedTo)
		}
	}
	if o.submitted && !retrying {
		r.event(ib, corev1.EventTypeNormal, EventBuildStarted, "Build", "%s", o.pending.why)
	}
	if res := o.built; res != nil {
		if res.UpToDate {
			r.event(ib, corev1.EventTypeNormal, EventUpToDate, "Push", "%s already holds %s", ib.Spec.Target.Image, ib.Status.Digest)
		} else {
			r.event(ib, corev1.EventTypeNormal, EventPushed, "Push", "pushed %s", ib.Status.Image)
		}
		if res.SignaturesWritten > 0 {
			r.event(ib, corev1.EventTypeNormal, EventSigned, "Sign", "attached %d signature(s) to %s", res.SignaturesWritten, ib.Status.Image)
		}
		if res.AttestationsWritten > 0 {
			r.event(ib, corev1.EventTypeNormal, EventAttested, "Attest", "attached %d attestation(s) to %s", res.AttestationsWritten, ib.Status.Image)
		}
	}
	was := apimeta.FindStatusCondition(before.Status.Conditions, kilnv1.ReadyCondition)
	now := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReadyCondition)
	if now == nil || (was != nil && was.Status == now.Status && was.Reason == now.Reason) {
		return
	}
	switch {
	case now.Status == metav1.ConditionFalse:
		r.event(ib, corev1.EventTypeWarning, now.Reason, actionOf(o.step), "%s", now.Message)
	case now.Status == metav1.ConditionTrue && o.built == nil:
		r.event(ib, corev1.EventTypeNormal, EventVerified, "Verify", "%s holds %s again", ib.Spec.Target.Image, ib.Status.Digest)
	}
}

func actionOf(step string) string {
	switch step {
	case stepResolve:
		return "Resolve"
	case stepVerify:
		return "Verify"
	}
	return "Build"
}

// requeueAfter: a failure retries at its backoff (a stall never), a build
// in flight comes back through the done channel, a Ready object at its
// next verification or base poll, whichever is first.
func (r *ImageBuildReconciler) requeueAfter(ib *kilnv1.ImageBuild, o *outcome, now time.Time) time.Duration {
	m := o.memo
	switch {
	case o.err != nil && policyOf(o.err) == stall:
		return 0
	case o.err != nil:
		return m.retryAt.Sub(now)
	case !o.waitUntil.IsZero():
		return max(o.waitUntil.Sub(now), time.Millisecond)
	case o.pending != nil, !engine.IsReady(ib):
		return 0
	}
	next := m.verifiedAt.Add(r.interval(ib))
	if engine.TagBase(&ib.Spec) != "" {
		if p := r.lastPoll(ib, m).Add(r.pollInterval(ib)); p.Before(next) {
			next = p
		}
	}
	return max(next.Sub(now), time.Millisecond)
}
