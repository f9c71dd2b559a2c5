package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kiln-build/kiln/internal/engine"
)

// job is one build handed to the build queue. The reconcile that submits it
// fills the first block; the job itself fills the second when it ends
// (under builds.mu), and a later reconcile records it in status: the
// reconcile's deferred summary stays the only writer of status.
type job struct {
	uid        types.UID
	generation int64
	// attempt is the attemptKey the job was submitted for.
	attempt string
	why     string
	// force pushes even when the target holds the digest; requestedAt is
	// the annotation value it handles (recorded when the job concludes).
	force       bool
	requestedAt string

	done        bool
	result      *engine.Result
	err         error
	fingerprint string // of the inputs the job read
	start, end  time.Time
}

// builds tracks the submitted jobs by ImageBuild, waiting, running or done
// and not yet recorded. It is what makes a spec change or a delete cancel a
// build (cancelStale) and what hands a finished build back to Reconcile.
// The zero value is ready to use.
type builds struct {
	mu      sync.Mutex
	pending map[types.NamespacedName]*job
}

// current returns a copy of key's job, if any.
func (b *builds) current(key types.NamespacedName) (job, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	j, ok := b.pending[key]
	if !ok {
		return job{}, false
	}
	return *j, true
}

// submit registers j under key and hands run to q, holding the lock so that
// a concurrent cancelStale cannot cancel a job it did not see. A key the
// queue still holds without a job here (cancelled, not returned yet) is
// cancelled first, so the new job is the one that runs.
func (b *builds) submit(q *BuildQueue, key types.NamespacedName, j *job, run func(context.Context)) (position int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[types.NamespacedName]*job{}
	}
	b.pending[key] = j
	pos, added := q.Submit(key, run)
	if !added {
		q.Cancel(key)
		pos, _ = q.Submit(key, run)
	}
	return pos
}

// finish records the outcome of j; a job that is no longer key's (it was
// cancelled as stale) is dropped.
func (b *builds) finish(key types.NamespacedName, j *job, fill func(*job)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending[key] != j {
		return
	}
	fill(j)
	j.done = true
}

// drop forgets j if it is still key's job (a cancelled job ends this way).
func (b *builds) drop(key types.NamespacedName, j *job) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending[key] == j {
		delete(b.pending, key)
	}
}

// recorded forgets key's job once its outcome is in status; attempt
// identifies it (a job submitted meanwhile is kept).
func (b *builds) recorded(key types.NamespacedName, uid types.UID, generation int64, attempt string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if j, ok := b.pending[key]; ok && j.done && j.uid == uid && j.generation == generation && j.attempt == attempt {
		delete(b.pending, key)
	}
}

// cancelStale cancels key's job (waiting or running) unless it builds
// generation of uid; an empty uid cancels any job (the object is gone).
// It reports whether it cancelled one.
func (b *builds) cancelStale(q *BuildQueue, key types.NamespacedName, uid types.UID, generation int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	j, ok := b.pending[key]
	if !ok || (uid != "" && j.uid == uid && j.generation == generation) {
		return false
	}
	delete(b.pending, key)
	if !j.done {
		q.Cancel(key)
	}
	return true
}

// memo is what the reconciler remembers about one ImageBuild between
// reconciles without writing it to status: a check that finds nothing new
// must not cost a status write. After a restart it is empty, which makes
// the first reconcile of each object verify its target.
type memo struct {
	uid types.UID
	// verifiedAt is when the target was last found holding status.digest
	// (or pushed); polledAt when the tag base was last resolved.
	verifiedAt, polledAt time.Time
	// retryAt is the earliest retry of the failed attempt retryKey; an
	// attempt with another key (spec, inputs or request changed) goes now.
	retryAt  time.Time
	retryKey string
	// metaID hashes the metadata (uid, resourceVersion) of the referenced
	// objects when fingerprint, the content fingerprint, was computed: while
	// it is unchanged their data is not read again.
	metaID, fingerprint string
}

// memos holds one memo per ImageBuild. Only the reconcile of an object
// touches its memo, and the workqueue never runs two reconciles of one
// object at once, so the memo itself needs no lock; the map does.
type memos struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*memo
}

// get returns key's memo, a fresh one when the object was re-created.
func (ms *memos) get(key types.NamespacedName, uid types.UID) *memo {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.m == nil {
		ms.m = map[types.NamespacedName]*memo{}
	}
	m, ok := ms.m[key]
	if !ok || m.uid != uid {
		m = &memo{uid: uid}
		ms.m[key] = m
	}
	return m
}

func (ms *memos) forget(key types.NamespacedName) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	delete(ms.m, key)
}
