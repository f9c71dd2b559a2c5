package engine

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
)

// Condition reasons besides the failure reasons.
const (
	ReasonSucceeded   = "Succeeded"
	ReasonUpToDate    = "UpToDate"
	ReasonProgressing = "Progressing"
)

// historyLimit is how many pushed digests status.history keeps.
const historyLimit = 10

// ApplyResult writes a successful build into ib.status with kstatus
// conditions: Ready=True, Reconciling and Stalled removed. The controller
// and `kiln build` both use it, so their output is identical.
func ApplyResult(ib *kilnv1.ImageBuild, res *Result, now time.Time) {
	prev := ib.Status
	st := res.Status
	st.ObservedGeneration = ib.Generation
	st.Conditions = prev.Conditions
	st.History = prev.History
	if !res.UpToDate && st.Digest != "" {
		st.History = appendHistory(prev.History, kilnv1.HistoryEntry{
			Digest: st.Digest, InputDigest: st.InputDigest, Time: metav1.NewTime(now),
		})
	}
	if st.Tags == nil {
		st.Tags = prev.Tags
	}
	ib.Status = st
	reason, msg := ReasonSucceeded, fmt.Sprintf("pushed %s", st.Image)
	if res.UpToDate {
		reason, msg = ReasonUpToDate, fmt.Sprintf("%s already holds %s", ib.Spec.Target.Image, st.Digest)
	}
	setCondition(ib, kilnv1.ReadyCondition, metav1.ConditionTrue, reason, msg)
	meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.ReconcilingCondition)
	meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.StalledCondition)
}

// ApplyFailure records a failed build: a permanent error stalls the object
// (Stalled=True, Ready=False) until its spec or inputs change; a transient one
// keeps it Reconciling with the error and counts the attempt.
func ApplyFailure(ib *kilnv1.ImageBuild, err error, now time.Time) {
	ib.Status.ObservedGeneration = ib.Generation
	ib.Status.Failures++
	reason := string(failure.ReasonOf(err))
	msg := err.Error()
	setCondition(ib, kilnv1.ReadyCondition, metav1.ConditionFalse, reason, msg)
	if failure.IsPermanent(err) {
		setCondition(ib, kilnv1.StalledCondition, metav1.ConditionTrue, reason, msg)
		meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.ReconcilingCondition)
		return
	}
	setCondition(ib, kilnv1.ReconcilingCondition, metav1.ConditionTrue, reason,
		fmt.Sprintf("retrying after attempt %d failed: %s", ib.Status.Failures, msg))
	meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.StalledCondition)
}

// MarkReconciling records that a build started: Reconciling=True and
// Ready=Unknown (kstatus: in progress).
func MarkReconciling(ib *kilnv1.ImageBuild, msg string) {
	setCondition(ib, kilnv1.ReconcilingCondition, metav1.ConditionTrue, ReasonProgressing, msg)
	setCondition(ib, kilnv1.ReadyCondition, metav1.ConditionUnknown, ReasonProgressing, msg)
	meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.StalledCondition)
}

// IsReady reports whether the Ready condition is True for the current generation.
func IsReady(ib *kilnv1.ImageBuild) bool {
	c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReadyCondition)
	return c != nil && c.Status == metav1.ConditionTrue && ib.Status.ObservedGeneration == ib.Generation
}

func setCondition(ib *kilnv1.ImageBuild, t string, s metav1.ConditionStatus, reason, msg string) {
	if len(msg) > 32000 {
		msg = msg[:32000] + "..."
	}
	meta.SetStatusCondition(&ib.Status.Conditions, metav1.Condition{
		Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: ib.Generation,
	})
}

func appendHistory(h []kilnv1.HistoryEntry, e kilnv1.HistoryEntry) []kilnv1.HistoryEntry {
	if len(h) > 0 && h[0].Digest == e.Digest {
		return h
	}
	out := append([]kilnv1.HistoryEntry{e}, h...)
	if len(out) > historyLimit {
		out = out[:historyLimit]
	}
	return out
}
