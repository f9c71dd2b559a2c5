package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
)

// These tests need no control plane: the queue is plain Go. They run under
// the package's TestMain all the same.

// queueWait bounds every wait of these tests. It is a deadlock guard, never
// an assertion about speed: the tests synchronise on channels.
const queueWait = 30 * time.Second

func qkey(s string) types.NamespacedName {
	ns, name, _ := strings.Cut(s, "/")
	return types.NamespacedName{Namespace: ns, Name: name}
}

// queueHarness runs a BuildQueue whose jobs report their start on started
// and then block until released (or until their ctx is done).
type queueHarness struct {
	t       *testing.T
	q       *BuildQueue
	started chan string // key of each job whose run began, in order

	mu      sync.Mutex
	release map[string]chan struct{}
	exited  map[string]chan error // ctx.Err() seen by the run as it returned

	active, maxActive atomic.Int32

	stop      context.CancelFunc
	startDone chan error
}

func newQueueHarness(t *testing.T, slots int, m *Metrics) *queueHarness {
	t.Helper()
	h := &queueHarness{
		t:       t,
		q:       NewBuildQueue(slots, m),
		started: make(chan string, 1000),
		release: map[string]chan struct{}{},
		exited:  map[string]chan error{},
	}
	t.Cleanup(func() {
		if h.stop != nil {
			h.stop()
			h.waitStartReturned()
		}
	})
	return h
}

// start runs the queue's Start in the background.
func (h *queueHarness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	h.startDone = make(chan error, 1)
	go func() { h.startDone <- h.q.Start(ctx) }()
}

func (h *queueHarness) waitStartReturned() error {
	h.t.Helper()
	select {
	case err := <-h.startDone:
		h.startDone <- err // idempotent for Cleanup
		return err
	case <-time.After(queueWait):
		h.t.Fatal("Start did not return")
		return nil
	}
}

// job is a run that reports its start and blocks until released or cancelled.
func (h *queueHarness) job(key string) func(context.Context) {
	h.mu.Lock()
	rel := make(chan struct{})
	ex := make(chan error, 1)
	h.release[key], h.exited[key] = rel, ex
	h.mu.Unlock()
	return func(ctx context.Context) {
		n := h.active.Add(1)
		for {
			m := h.maxActive.Load()
			if n <= m || h.maxActive.CompareAndSwap(m, n) {
				break
			}
		}
		h.started <- key
		select {
		case <-rel:
		case <-ctx.Done():
		}
		h.active.Add(-1)
		ex <- ctx.Err()
	}
}

// submit submits h.job(key); a duplicate keeps the channels of the job the
// queue kept.
func (h *queueHarness) submit(key string) (int, bool) {
	h.mu.Lock()
	rel, ex := h.release[key], h.exited[key]
	h.mu.Unlock()
	pos, added := h.q.Submit(qkey(key), h.job(key))
	if !added {
		h.mu.Lock()
		h.release[key], h.exited[key] = rel, ex
		h.mu.Unlock()
	}
	return pos, added
}

func (h *queueHarness) nextStarted() string {
	h.t.Helper()
	select {
	case k := <-h.started:
		return k
	case <-time.After(queueWait):
		h.t.Fatal("no job started")
		return ""
	}
}

// finish releases key's run and waits until it returned.
func (h *queueHarness) finish(key string) {
	h.t.Helper()
	h.mu.Lock()
	rel := h.release[key]
	h.mu.Unlock()
	close(rel)
	h.waitExited(key)
}

func (h *queueHarness) waitExited(key string) error {
	h.t.Helper()
	h.mu.Lock()
	ex := h.exited[key]
	h.mu.Unlock()
	select {
	case err := <-ex:
		return err
	case <-time.After(queueWait):
		h.t.Fatalf("%s did not return", key)
		return nil
	}
}

// noStartYet fails if a job start is pending on the channel. It can only
// catch a wrong start that already happened; it never fails a correct queue.
func (h *queueHarness) noStartYet() {
	h.t.Helper()
	select {
	case k := <-h.started:
		h.t.Fatalf("%s started unexpectedly", k)
	default:
	}
}

// positions returns Position of every key (-1 when not known).
func (h *queueHarness) positions(keys []string) []int {
	out := make([]int, len(keys))
	for i, k := range keys {
		p, ok := h.q.Position(qkey(k))
		if !ok {
			p = -1
		}
		out[i] = p
	}
	return out
}

// TestBuildQueueFairOrder: with one slot, jobs start round robin by
// namespace (FIFO within one), and every position reported along the way is
// the job's rank in the start order that follows.
func TestBuildQueueFairOrder(t *testing.T) {
	cases := []struct {
		name   string
		before []string // submitted before Start
		after  []string // submitted once the first job runs
		want   []string // start order
	}{
		{
			name:   "8 in a, 1 in b before Start: b starts second",
			before: []string{"a/0", "a/1", "a/2", "a/3", "a/4", "a/5", "a/6", "a/7", "b/0"},
			want:   []string{"a/0", "b/0", "a/1", "a/2", "a/3", "a/4", "a/5", "a/6", "a/7"},
		},
		{
			name:  "8 in a, 1 in b after Start: b starts second",
			after: []string{"a/0", "a/1", "a/2", "a/3", "a/4", "a/5", "a/6", "a/7", "b/0"},
			want:  []string{"a/0", "b/0", "a/1", "a/2", "a/3", "a/4", "a/5", "a/6", "a/7"},
		},
		{
			name:   "three namespaces take turns",
			before: []string{"a/0", "a/1", "a/2", "b/0", "b/1", "c/0"},
			want:   []string{"a/0", "b/0", "c/0", "a/1", "b/1", "a/2"},
		},
		{
			name:   "interleaved submissions keep FIFO within a namespace",
			before: []string{"b/x", "a/x", "b/y", "a/y", "b/z"},
			want:   []string{"b/x", "a/x", "b/y", "a/y", "b/z"},
		},
		{
			name:   "namespaces arriving late go before the one already served",
			before: []string{"a/0", "a/1", "a/2"},
			after:  []string{"b/0", "c/0", "b/1"},
			want:   []string{"a/0", "b/0", "c/0", "a/1", "b/1", "a/2"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newQueueHarness(t, 1, nil)
			mustAdd := func(k string) {
				t.Helper()
				if _, added := h.submit(k); !added {
					t.Fatalf("Submit(%s) added=false", k)
				}
			}
			for _, k := range tc.before {
				mustAdd(k)
			}
			h.start()
			rest := tc.after
			if len(tc.before) == 0 {
				mustAdd(rest[0])
				rest = rest[1:]
			}
			if got := h.nextStarted(); got != tc.want[0] {
				t.Fatalf("first start = %s, want %s", got, tc.want[0])
			}
			for _, k := range rest {
				mustAdd(k)
			}
			for i, k := range tc.want {
				if i > 0 {
					if got := h.nextStarted(); got != k {
						t.Fatalf("start %d = %s, want %s (order %v)", i, got, k, tc.want)
					}
				}
				// k runs now (so the ones before it released their slot):
				// positions of the rest are their ranks, of the done ones unknown.
				wantPos := slices.Repeat([]int{-1}, i)
				for r := range len(tc.want) - i {
					wantPos = append(wantPos, r)
				}
				if got := h.positions(tc.want); !slices.Equal(got, wantPos) {
					t.Fatalf("after %s started: positions of %v = %v, want %v", k, tc.want, got, wantPos)
				}
				h.finish(k)
			}
		})
	}
}

// TestBuildQueuePositionsBeforeStart: positions returned by Submit before
// Start are the start order, so a job of a small namespace can be ahead of
// older jobs of a big one.
func TestBuildQueuePositionsBeforeStart(t *testing.T) {
	h := newQueueHarness(t, 1, nil)
	steps := []struct {
		key  string
		want int
	}{
		{"big/0", 1}, {"big/1", 2}, {"big/2", 3}, {"big/3", 4},
		{"small/0", 2}, // after big/0, before big/1
		{"other/0", 3},
		{"small/1", 5}, // round 2: big/1, small/1
	}
	for _, s := range steps {
		if pos, added := h.submit(s.key); pos != s.want || !added {
			t.Fatalf("Submit(%s) = %d, %v; want %d, true", s.key, pos, added, s.want)
		}
	}
	order := []string{"big/0", "small/0", "other/0", "big/1", "small/1", "big/2", "big/3"}
	if got := h.positions(order); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("positions of %v = %v", order, got)
	}
}

// TestBuildQueueSlotsRespected: never more than slots runs at once, and all
// jobs run.
func TestBuildQueueSlotsRespected(t *testing.T) {
	for _, slots := range []int{1, 3} {
		t.Run(fmt.Sprint("slots=", slots), func(t *testing.T) {
			const total = 10
			h := newQueueHarness(t, slots, nil)
			for i := range total {
				h.submit(fmt.Sprintf("ns%d/j%d", i%2, i))
			}
			h.start()
			running := map[string]bool{}
			for range slots {
				running[h.nextStarted()] = true
			}
			seen := slots
			for len(running) > 0 {
				// Every start so far followed a release (the slots are full), so
				// the waiting count is exact; a slot of the job finished last may
				// still be releasing.
				if w, r := h.q.Counts(); r > slots || w != total-seen {
					t.Fatalf("Counts() = %d waiting, %d running; slots %d, %d started", w, r, slots, seen)
				}
				var k string
				for k = range running {
					break
				}
				delete(running, k)
				h.finish(k)
				if seen < total {
					running[h.nextStarted()] = true
					seen++
				}
			}
			// The runs block until released one by one, so a queue that ran
			// more than slots at once would have had them overlap.
			if m := h.maxActive.Load(); m != int32(slots) {
				t.Fatalf("at most %d ran at once, want %d", m, slots)
			}
		})
	}
}

// TestBuildQueueDuplicateSubmit: a key already waiting or running is not
// added again, and its position is returned.
func TestBuildQueueDuplicateSubmit(t *testing.T) {
	h := newQueueHarness(t, 1, nil)
	h.submit("a/0")
	h.submit("a/1")
	h.submit("b/0")
	ranTwice := func(context.Context) { t.Error("the duplicate's run was called") }
	if pos, added := h.q.Submit(qkey("a/1"), ranTwice); pos != 3 || added {
		t.Fatalf("duplicate Submit(a/1) = %d, %v; want 3, false", pos, added)
	}
	h.start()
	if got := h.nextStarted(); got != "a/0" {
		t.Fatalf("first start %s", got)
	}
	if pos, added := h.q.Submit(qkey("a/0"), ranTwice); pos != 0 || added {
		t.Fatalf("duplicate Submit(a/0) while running = %d, %v; want 0, false", pos, added)
	}
	if pos, added := h.q.Submit(qkey("a/1"), ranTwice); pos != 2 || added {
		t.Fatalf("duplicate Submit(a/1) = %d, %v; want 2, false", pos, added)
	}
	for _, k := range []string{"a/0", "b/0", "a/1"} {
		if k != "a/0" {
			if got := h.nextStarted(); got != k {
				t.Fatalf("started %s, want %s", got, k)
			}
		}
		h.finish(k)
	}
	// Finished keys can be submitted again.
	if _, added := h.submit("a/0"); !added {
		t.Fatal("Submit after the job finished: added=false")
	}
	if got := h.nextStarted(); got != "a/0" {
		t.Fatalf("started %s", got)
	}
	h.finish("a/0")
}

// TestBuildQueueCancel covers a waiting job (never runs), a running job (ctx
// cancelled, slot freed), unknown keys, and a key submitted again while its
// cancelled run is still returning (the two never run at once).
func TestBuildQueueCancel(t *testing.T) {
	t.Run("waiting", func(t *testing.T) {
		h := newQueueHarness(t, 1, nil)
		h.start()
		h.submit("a/run")
		if got := h.nextStarted(); got != "a/run" {
			t.Fatalf("started %s", got)
		}
		h.submit("a/gone")
		h.submit("b/next")
		if !h.q.Cancel(qkey("a/gone")) {
			t.Fatal("Cancel(waiting) = false")
		}
		if h.q.Cancel(qkey("a/gone")) || h.q.Cancel(qkey("x/never")) {
			t.Fatal("Cancel of an unknown key = true")
		}
		if got := h.positions([]string{"a/gone", "b/next"}); !slices.Equal(got, []int{-1, 1}) {
			t.Fatalf("positions %v", got)
		}
		h.finish("a/run")
		if got := h.nextStarted(); got != "b/next" {
			t.Fatalf("started %s after cancelling a/gone, want b/next", got)
		}
		h.finish("b/next")
		h.noStartYet()
		if w, _ := h.q.Counts(); w != 0 {
			t.Fatalf("%d waiting after cancel", w)
		}
	})
	t.Run("running", func(t *testing.T) {
		h := newQueueHarness(t, 1, nil)
		h.start()
		h.submit("a/run")
		h.submit("b/next")
		if got := h.nextStarted(); got != "a/run" {
			t.Fatalf("started %s", got)
		}
		if !h.q.Cancel(qkey("a/run")) {
			t.Fatal("Cancel(running) = false")
		}
		if err := h.waitExited("a/run"); err != context.Canceled {
			t.Fatalf("run saw ctx.Err() = %v, want context.Canceled", err)
		}
		if _, ok := h.q.Position(qkey("a/run")); ok {
			t.Fatal("cancelled job still has a position")
		}
		if got := h.nextStarted(); got != "b/next" {
			t.Fatalf("started %s, want b/next in the freed slot", got)
		}
		h.finish("b/next")
	})
	t.Run("resubmitted while the cancelled run returns", func(t *testing.T) {
		h := newQueueHarness(t, 2, nil)
		newWaits := make(chan struct{})
		h.q.waitingForPrev = func(types.NamespacedName) { close(newWaits) }
		h.start()
		k := qkey("a/x")
		oldIn, cancelled, letGo := make(chan struct{}), make(chan struct{}), make(chan struct{})
		var letGoOnce sync.Once
		release := func() { letGoOnce.Do(func() { close(letGo) }) }
		t.Cleanup(release) // before the harness stops the queue, on failure too
		var oldReturned atomic.Bool
		h.q.Submit(k, func(ctx context.Context) {
			defer oldReturned.Store(true)
			close(oldIn)
			<-ctx.Done()
			close(cancelled)
			<-letGo // a build that takes a while to wind down
		})
		<-oldIn
		if !h.q.Cancel(k) {
			t.Fatal("Cancel = false")
		}
		<-cancelled
		newRan := make(chan bool, 1)
		pos, added := h.q.Submit(k, func(context.Context) { newRan <- oldReturned.Load() })
		if !added || pos != 0 {
			t.Fatalf("Submit again = %d, %v; want 0 (the free slot), true", pos, added)
		}
		// The new job took the free slot; it must wait for the old run
		// rather than run beside it.
		select {
		case <-newWaits:
		case <-newRan:
			t.Fatal("the new job ran while the cancelled one was still running")
		case <-time.After(queueWait):
			t.Fatal("the new job neither ran nor waited")
		}
		release()
		select {
		case afterOld := <-newRan:
			if !afterOld {
				t.Fatal("the new job ran before the cancelled one returned")
			}
		case <-time.After(queueWait):
			t.Fatal("the new job never ran")
		}
	})
}

// TestBuildQueueShutdown: cancelling Start's ctx cancels running jobs, does
// not start waiting ones, and Start returns only after the running ones
// returned, including one that takes a while to wind down.
func TestBuildQueueShutdown(t *testing.T) {
	h := newQueueHarness(t, 2, nil)
	h.submit("a/0")
	slowIn, slowCancelled, windDown := make(chan struct{}), make(chan struct{}), make(chan struct{})
	h.q.Submit(qkey("z/slow"), func(ctx context.Context) {
		close(slowIn)
		<-ctx.Done()
		close(slowCancelled)
		<-windDown
	})
	h.q.Submit(qkey("c/waiting"), func(context.Context) {
		t.Error("a waiting job started during shutdown")
	})
	h.start()
	if got := h.nextStarted(); got != "a/0" {
		t.Fatalf("started %s", got)
	}
	<-slowIn

	h.stop()
	if err := h.waitExited("a/0"); err != context.Canceled {
		t.Fatalf("a/0 saw %v, want context.Canceled", err)
	}
	<-slowCancelled
	select {
	case <-h.startDone:
		t.Fatal("Start returned while a run was still winding down")
	default:
	}
	close(windDown)
	if err := h.waitStartReturned(); err != nil {
		t.Fatalf("Start = %v", err)
	}
	h.noStartYet()
	if w, r := h.q.Counts(); w != 1 || r != 0 {
		t.Fatalf("after shutdown: %d waiting, %d running; want 1, 0", w, r)
	}
	// Started twice is an error, not a second dispatcher.
	if err := h.q.Start(context.Background()); err == nil {
		t.Fatal("second Start = nil error")
	}
}

// TestBuildQueuePanicFreesSlot: a panicking run is recovered, the queue goes
// on and its slot is reused.
func TestBuildQueuePanicFreesSlot(t *testing.T) {
	h := newQueueHarness(t, 1, nil)
	h.q.Submit(qkey("a/boom"), func(context.Context) { panic("boom") })
	h.submit("b/next")
	h.submit("a/after")
	h.start()
	for _, k := range []string{"b/next", "a/after"} {
		if got := h.nextStarted(); got != k {
			t.Fatalf("started %s, want %s", got, k)
		}
		if _, ok := h.q.Position(qkey("a/boom")); ok {
			t.Fatal("the panicked job is still known")
		}
		h.finish(k)
	}
	if _, added := h.q.Submit(qkey("a/boom"), h.job("a/boom")); !added {
		t.Fatal("Submit after a panic: added=false")
	}
	if got := h.nextStarted(); got != "a/boom" {
		t.Fatalf("started %s", got)
	}
	h.finish("a/boom")
}

// TestBuildQueueQueuedGauge: kiln_builds_queued counts waiting jobs only.
func TestBuildQueueQueuedGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	h := newQueueHarness(t, 2, m)
	gauge := func(want float64) {
		t.Helper()
		if got := gathered(t, reg)["kiln_builds_queued"]; got != want {
			t.Fatalf("kiln_builds_queued = %v, want %v", got, want)
		}
	}
	gauge(0)
	for _, k := range []string{"a/0", "a/1", "b/0", "b/1", "c/0"} {
		h.submit(k)
	}
	gauge(5) // nothing runs before Start
	h.submit("a/0")
	gauge(5) // a duplicate adds nothing
	h.start()
	first := []string{h.nextStarted(), h.nextStarted()}
	gauge(3)
	h.q.Cancel(qkey("c/0"))
	gauge(2)
	h.q.Cancel(qkey(first[0])) // running: its freed slot takes the next waiting job
	h.waitExited(first[0])
	third := h.nextStarted()
	gauge(1)
	h.finish(first[1])
	fourth := h.nextStarted()
	gauge(0)
	h.finish(third)
	h.finish(fourth)
	gauge(0)
}

// TestBuildQueueNeedsLeader: only the leader builds.
func TestBuildQueueNeedsLeader(t *testing.T) {
	if !NewBuildQueue(1, nil).NeedLeaderElection() {
		t.Fatal("NeedLeaderElection = false")
	}
}

// BenchmarkQueueSubmitDispatch: 10 000 jobs over 100 namespaces through 4
// slots, from Submit to the last run returning.
func BenchmarkQueueSubmitDispatch(b *testing.B) {
	const jobs, spaces = 10000, 100
	keys := make([]types.NamespacedName, jobs)
	for i := range keys {
		keys[i] = types.NamespacedName{Namespace: fmt.Sprintf("ns%03d", i%spaces), Name: fmt.Sprintf("ib%05d", i)}
	}
	b.ReportAllocs()
	for b.Loop() {
		q := NewBuildQueue(4, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- q.Start(ctx) }()
		var wg sync.WaitGroup
		wg.Add(jobs)
		run := func(context.Context) { wg.Done() }
		for _, k := range keys {
			q.Submit(k, run)
		}
		wg.Wait()
		cancel()
		<-done
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*jobs), "ns/job")
}

// BenchmarkQueueSubmitWaiting: Submit (with its position) and Position
// while 10 000 jobs over 100 namespaces wait, the cost a reconcile pays.
func BenchmarkQueueSubmitWaiting(b *testing.B) {
	const jobs, spaces = 10000, 100
	keys := make([]types.NamespacedName, jobs)
	for i := range keys {
		keys[i] = types.NamespacedName{Namespace: fmt.Sprintf("ns%03d", i%spaces), Name: fmt.Sprintf("ib%05d", i)}
	}
	run := func(context.Context) {}
	b.Run("submit-10000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			q := NewBuildQueue(4, nil)
			for _, k := range keys {
				q.Submit(k, run)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*jobs), "ns/job")
	})
	b.Run("position", func(b *testing.B) {
		q := NewBuildQueue(4, nil)
		for _, k := range keys {
			q.Submit(k, run)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			q.Position(keys[i%jobs])
			i++
		}
	})
}
