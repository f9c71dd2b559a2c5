package controllers

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// BuildQueue runs builds in a bounded number of slots, fairly across
// namespaces. Reconcile workers only submit to it, so status updates, drift
// polls and decisions never wait for a build slot (issue 11, item 6).
//
// Fairness: when a slot frees, the namespace whose last dispatch is the
// oldest goes next (a namespace that has had none since it became active
// goes first, in the order namespaces arrived); within a namespace jobs start
// in submission order. So namespaces take turns, and one team's 500 waiting
// builds delay another team's single build by at most one build per other
// active namespace.
//
// There is no goroutine per waiting job: a job gets a goroutine when it takes
// a slot, and every slot release (or Submit, or Start) dispatches under the
// lock. Memory per waiting job is one small struct plus the run closure.
type BuildQueue struct {
	slots int
	m     *Metrics
	log   logr.Logger

	mu    sync.Mutex
	state queueState
	base  context.Context // Start's ctx: parent of every job's ctx
	wg    sync.WaitGroup  // running job goroutines, for shutdown

	// jobs holds every key that is waiting, or running and not cancelled:
	// the keys a Submit is a duplicate of.
	jobs map[types.NamespacedName]*queuedJob
	// retiring holds, per key, the last job that was cancelled while
	// running and has not returned yet. A new job of the same key waits for
	// it before running, so one ImageBuild never builds twice at once.
	retiring map[types.NamespacedName]*queuedJob
	// spaces holds the namespaces with waiting or running jobs; dropped when
	// both are zero, so memory follows the active namespaces only.
	spaces map[string]*nsQueue
	// turns lists the namespaces with waiting jobs in the order they get the
	// next slots: ascending by served (ties: arrival order).
	turns list.List

	clock   int64  // dispatch counter, the values of nsQueue.served
	seq     uint64 // submission counter, the values of queuedJob.seq
	waiting int
	running int // occupied slots

	// waitingForPrev, when set (tests), is called when a job that took a
	// slot starts waiting for the cancelled run of its key.
	waitingForPrev func(types.NamespacedName)
}

type queueState int

const (
	queueIdle queueState = iota
	queueRunning
	queueStopped
)

type queuedJob struct {
	key types.NamespacedName
	run func(context.Context)
	seq uint64 // ascending within a namespace's FIFO, for binary search

	// Set when the job takes a slot.
	cancel context.CancelFunc
	done   chan struct{} // closed when run (and any predecessor) returned
}

type nsQueue struct {
	name    string
	waiting []*queuedJob // FIFO, seq ascending
	running int
	served  int64         // q.clock at the namespace's last dispatch; 0 = none yet
	turn    *list.Element // in q.turns while waiting is non-empty
}

var (
	_ manager.Runnable               = (*BuildQueue)(nil)
	_ manager.LeaderElectionRunnable = (*BuildQueue)(nil)
)

// NewBuildQueue returns a queue of slots build slots (at least 1). m may be
// nil (no metrics).
func NewBuildQueue(slots int, m *Metrics) *BuildQueue {
	if slots < 1 {
		slots = 1
	}
	q := &BuildQueue{
		slots:    slots,
		m:        m,
		log:      ctrl.Log.WithName("build-queue"),
		jobs:     map[types.NamespacedName]*queuedJob{},
		retiring: map[types.NamespacedName]*queuedJob{},
		spaces:   map[string]*nsQueue{},
	}
	q.setGauge()
	return q
}

// NeedLeaderElection makes the manager start the queue only on the leader:
// only the leader builds.
func (q *BuildQueue) NeedLeaderElection() bool { return true }

// Submit queues run for key unless key is already queued or running.
// position 0 = running now, n > 0 = n-th waiting in the order jobs will start
// (if nothing else is submitted). added=false when key was already there: the
// existing job is kept and its position returned.
//
// Submitting before Start is allowed: jobs wait until Start. A key whose
// running job was cancelled can be submitted again at once; the new job
// waits its turn as usual and, should it get a slot before the cancelled one
// returned, waits for that one before running.
func (q *BuildQueue) Submit(key types.NamespacedName, run func(ctx context.Context)) (position int, added bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if j, ok := q.jobs[key]; ok {
		return q.positionLocked(j), false
	}
	q.seq++
	j := &queuedJob{key: key, run: run, seq: q.seq}
	q.jobs[key] = j
	q.enqueueLocked(j)
	q.dispatchLocked()
	return q.positionLocked(j), true
}

// Position reports key's position as Submit does; false when key is neither
// queued nor running (a cancelled job that has not returned yet counts as
// gone: its key may be submitted again). A job holding a slot while it waits
// for its key's cancelled run is at 0.
func (q *BuildQueue) Position(key types.NamespacedName) (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[key]
	if !ok {
		return 0, false
	}
	return q.positionLocked(j), true
}

// Cancel dequeues a waiting job (its run is never called), or cancels the
// ctx of a running one (its slot frees when run returns). It reports whether
// key was queued or running.
func (q *BuildQueue) Cancel(key types.NamespacedName) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[key]
	if !ok {
		return false
	}
	delete(q.jobs, key)
	if j.done != nil {
		j.cancel()
		q.retiring[key] = j
		return true
	}
	ns := q.spaces[key.Namespace]
	i := ns.index(j)
	ns.waiting = append(ns.waiting[:i], ns.waiting[i+1:]...)
	q.waiting--
	if len(ns.waiting) == 0 {
		q.turns.Remove(ns.turn)
		ns.turn, ns.waiting = nil, nil
		q.dropIfIdleLocked(ns)
	}
	q.setGauge()
	return true
}

// Counts returns the number of waiting jobs and of occupied slots.
func (q *BuildQueue) Counts() (waiting, running int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiting, q.running
}

// Start runs the queue until ctx is done (manager.Runnable). On shutdown the
// running jobs' ctx (derived from ctx) is cancelled and Start returns once
// they all returned; waiting jobs are not started.
func (q *BuildQueue) Start(ctx context.Context) error {
	q.mu.Lock()
	if q.state != queueIdle {
		q.mu.Unlock()
		return errors.New("build queue started twice")
	}
	q.state, q.base = queueRunning, ctx
	q.dispatchLocked()
	q.mu.Unlock()

	<-ctx.Done()

	q.mu.Lock()
	q.state = queueStopped
	q.mu.Unlock()
	// No Add after this point: dispatch needs queueRunning.
	q.wg.Wait()
	return nil
}

func (q *BuildQueue) enqueueLocked(j *queuedJob) {
	ns := q.spaces[j.key.Namespace]
	if ns == nil {
		ns = &nsQueue{name: j.key.Namespace}
		q.spaces[ns.name] = ns
	}
	ns.waiting = append(ns.waiting, j)
	q.waiting++
	if ns.turn == nil {
		q.insertTurnLocked(ns)
	}
	q.setGauge()
}

// insertTurnLocked places ns in turns after every namespace served no later
// than it (so newcomers go after earlier newcomers, before anyone served).
func (q *BuildQueue) insertTurnLocked(ns *nsQueue) {
	for e := q.turns.Back(); e != nil; e = e.Prev() {
		if e.Value.(*nsQueue).served <= ns.served {
			ns.turn = q.turns.InsertAfter(ns, e)
			return
		}
	}
	ns.turn = q.turns.PushFront(ns)
}

// dispatchLocked fills free slots from the head of turns. Once Start's ctx
// is done nothing starts, even before Start has marked the queue stopped
// (the jobs it cancels release their slots first).
func (q *BuildQueue) dispatchLocked() {
	for q.state == queueRunning && q.base.Err() == nil && q.running < q.slots {
		e := q.turns.Front()
		if e == nil {
			break
		}
		ns := e.Value.(*nsQueue)
		j := ns.waiting[0]
		ns.waiting[0] = nil // no reference kept by the backing array
		ns.waiting = ns.waiting[1:]
		q.waiting--
		q.clock++
		ns.served = q.clock
		if len(ns.waiting) == 0 {
			q.turns.Remove(e)
			ns.turn, ns.waiting = nil, nil
		} else {
			q.turns.MoveToBack(e) // served is now the largest
		}
		ns.running++
		q.running++
		q.startLocked(j)
	}
	q.setGauge()
}

func (q *BuildQueue) startLocked(j *queuedJob) {
	ctx, cancel := context.WithCancel(q.base)
	j.cancel, j.done = cancel, make(chan struct{})
	prev := q.retiring[j.key]
	q.wg.Add(1)
	go q.runJob(ctx, j, prev, q.waitingForPrev)
}

func (q *BuildQueue) runJob(ctx context.Context, j, prev *queuedJob, hook func(types.NamespacedName)) {
	defer q.wg.Done()
	defer q.release(j)
	if prev != nil {
		if hook != nil {
			hook(j.key)
		}
		// prev's ctx is cancelled, it returns promptly; its done also covers
		// its own predecessors.
		<-prev.done
	}
	if ctx.Err() == nil { // cancelled while waiting for prev, or shutdown
		q.call(ctx, j)
	}
}

// call runs the job; a panic is logged and the slot freed as for a return.
func (q *BuildQueue) call(ctx context.Context, j *queuedJob) {
	defer func() {
		if r := recover(); r != nil {
			q.log.Error(fmt.Errorf("panic: %v", r), "Build panicked; its slot is freed",
				"imagebuild", j.key.String(), "stacktrace", string(debug.Stack()))
		}
	}()
	j.run(ctx)
}

// release frees j's slot and dispatches the next job.
func (q *BuildQueue) release(j *queuedJob) {
	q.mu.Lock()
	defer q.mu.Unlock()
	close(j.done)
	j.cancel()
	if q.jobs[j.key] == j {
		delete(q.jobs, j.key)
	}
	if q.retiring[j.key] == j {
		delete(q.retiring, j.key)
	}
	ns := q.spaces[j.key.Namespace]
	ns.running--
	q.dropIfIdleLocked(ns)
	q.running--
	q.dispatchLocked()
}

func (q *BuildQueue) dropIfIdleLocked(ns *nsQueue) {
	if ns.running == 0 && len(ns.waiting) == 0 {
		delete(q.spaces, ns.name)
	}
}

// positionLocked computes j's place in the start order: turns is walked in
// rounds (round r starts the r-th waiting job of every namespace that has
// one, in turns order), so a job i-th in its namespace comes after
// min(len, i) jobs of every namespace, plus the i-th jobs of the namespaces
// ahead of its own.
func (q *BuildQueue) positionLocked(j *queuedJob) int {
	if j.done != nil {
		return 0
	}
	own := q.spaces[j.key.Namespace]
	i := own.index(j)
	pos, ahead := 0, true
	for e := q.turns.Front(); e != nil; e = e.Next() {
		ns := e.Value.(*nsQueue)
		n := len(ns.waiting)
		pos += min(n, i)
		if ahead && n > i {
			pos++ // its i-th job, or j itself
		}
		if ns == own {
			ahead = false
		}
	}
	return pos
}

// index finds j in the FIFO (seq ascending); j must be there.
func (ns *nsQueue) index(j *queuedJob) int {
	return sort.Search(len(ns.waiting), func(k int) bool { return ns.waiting[k].seq >= j.seq })
}

func (q *BuildQueue) setGauge() {
	if q.m != nil && q.m.Queued != nil {
		q.m.Queued.Set(float64(q.waiting))
	}
}
