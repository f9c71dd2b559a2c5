package queueing_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/controllers"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

const (
	nsA = "team-a"
	nsB = "team-b"
	// guard bounds every wait: it only limits how long a broken queue takes
	// to fail, it measures nothing.
	guard = 60 * time.Second
	// intervalAnnotation shortens an ImageBuild's interval below the CRD's
	// 1m minimum, as in the controllers suite (IntervalOf).
	intervalAnnotation = "test.kiln.dev/interval"
)

// build is one ImageBuild of the test, named by its namespace's letter and
// its rank in that namespace (a1, b2).
type build struct{ ns, name string }

func (b build) String() string { return b.name }

func (b build) key() types.NamespacedName { return types.NamespacedName{Namespace: b.ns, Name: b.name} }

// TestQueueTakesNamespacesInTurnsAndNeverBlocksReconciles is issue 11's
// queue test. With one build slot, eight ImageBuilds (six in team-a, two in
// team-b) wait their turn; their layer requests are held by the file server
// until the test releases them one at a time, so which build holds the slot
// and which wait is decided by the test, never by timing.
//
// The ImageBuilds are created one by one, each after the previous one shows
// Queued, so that the order in which they reach the queue is known: a1
// takes the slot, a2..a6 queue behind it, then b1 and b2. Round robin by
// namespace puts b1 ahead of the five waiting team-a builds and b2 after
// one more of them; FIFO would have built all of team-a first.
func TestQueueTakesNamespacesInTurnsAndNeverBlocksReconciles(t *testing.T) {
	ctrl.SetLogger(logr.Discard())
	cfg, admin := startControlPlane(t)
	for _, ns := range []string{nsA, nsB} {
		kube.Create(t, admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	reg := newRegistry(t)
	files := newGatedFiles(t)
	r := startManager(t, cfg)

	// r is Ready before anything queues; its interval is short so that it
	// polls its target several times while the slot is held.
	ready := build{nsA, "r"}
	ib := imageBuild(ready, files.put(ready.name, testkit.Files(t, "r.txt", "r\n"), false), reg)
	ib.Annotations = map[string]string{intervalAnnotation: "500ms"}
	kube.Create(t, admin, ib)
	waitReady(t, admin, ready)

	a1 := build{nsA, "a1"}
	var rest []build
	for i := 2; i <= 6; i++ {
		rest = append(rest, build{nsA, "a" + strconv.Itoa(i)})
	}
	rest = append(rest, build{nsB, "b1"}, build{nsB, "b2"})
	create := func(b build) {
		t.Helper()
		kube.Create(t, admin, imageBuild(b, files.put(b.name, testkit.Files(t, b.name+".txt", b.name+"\n"), true), reg))
	}

	create(a1)
	if got := files.next(t); got != a1.name {
		t.Fatalf("the first layer request is %s's, want a1's", got)
	}
	waitBuilding(t, admin, a1)

	// Each position is the one the build had when it queued (the status
	// field's meaning): a2..a6 line up behind a1, b1 goes first, b2 third.
	queuedAt := map[string]int32{"a2": 1, "a3": 2, "a4": 3, "a5": 4, "a6": 5, "b1": 1, "b2": 3}
	for _, b := range rest {
		create(b)
		waitQueued(t, admin, b, queuedAt[b.name])
	}
	if waiting, running := r.Queue.Counts(); waiting != 7 || running != 1 {
		t.Fatalf("queue: %d waiting, %d running; want 7 and 1", waiting, running)
	}

	// Reconciles do not wait for the slot: r's drift polls (a HEAD of its
	// target each) complete while a1 holds it and seven builds wait.
	repoR := "queue/" + ready.name
	polls := reg.count("HEAD", repoR)
	testkit.WaitFor(t, guard, "two drift polls of r while every build is held", func() (bool, string) {
		n := reg.count("HEAD", repoR) - polls
		return n >= 2, fmt.Sprintf("%d HEADs of %s since the builds queued", n, repoR)
	})

	if ib := kube.Get(t, admin, ready.ns, ready.name); !engine.IsReady(ib) {
		t.Errorf("r after its drift polls: %s", kube.Describe(ib))
	}

	// A position is written when its ImageBuild reconciles; b1 and b2 moved
	// team-a's builds back without reconciling them. A requestedAt reconciles
	// each now: the positions are then the start order, 1..7 and distinct.
	want := []build{a1, {nsB, "b1"}, {nsA, "a2"}, {nsB, "b2"}, {nsA, "a3"}, {nsA, "a4"}, {nsA, "a5"}, {nsA, "a6"}}
	for _, b := range rest {
		requestReconcile(t, admin, b, "positions")
	}
	for i, b := range want[1:] {
		waitQueued(t, admin, b, int32(i+1))
	}

	// Release the builds one at a time and record which layer the file
	// server is asked for next: that is the queue's start order.
	order := []build{a1}
	byName := map[string]build{}
	for _, b := range rest {
		byName[b.name] = b
	}
	files.release(a1.name)
	for i := 1; i < len(want); i++ {
		name := files.next(t)
		b, ok := byName[name]
		if !ok {
			t.Fatalf("layer request %d is for %q, which is not a queued build", i+1, name)
		}
		order = append(order, b)
		if waiting, running := r.Queue.Counts(); waiting != len(want)-1-i || running != 1 {
			t.Errorf("while %s builds: %d waiting, %d running; want %d and 1", b, waiting, running, len(want)-1-i)
		}
		waitBuilding(t, admin, b)
		files.release(name)
	}
	t.Logf("start order: %v", order)
	if !slices.Equal(order, want) {
		t.Errorf("start order %v, want %v", order, want)
	}
	if err := passedOverAtMostOnce(order[1:]); err != nil {
		t.Errorf("start order %v: %v", order, err)
	}
	if n := files.maxHeld(); n != 1 {
		t.Errorf("%d layer requests were held at once, want 1 (one slot)", n)
	}

	for _, b := range append([]build{a1}, rest...) {
		waitReady(t, admin, b)
		if n := reg.count("PUT", "queue/"+b.name); n != 1 {
			t.Errorf("%s: %d manifest PUTs, want 1", b, n)
		}
	}
}

// passedOverAtMostOnce checks round robin over two namespaces on a start
// order in which every build was already waiting at the first start: a
// namespace that still has builds waiting is never passed over twice in a
// row.
func passedOverAtMostOnce(order []build) error {
	left := map[string]int{}
	for _, b := range order {
		left[b.ns]++
	}
	passed := map[string]int{}
	for i, b := range order {
		for ns, n := range left {
			switch {
			case ns == b.ns:
				passed[ns] = 0
			case n > 0:
				passed[ns]++
				if passed[ns] > 1 {
					return fmt.Errorf("%s, with %d builds waiting, passed over twice in a row (start %d: %s)", ns, n, i+1, b)
				}
			}
		}
		left[b.ns]--
	}
	return nil
}

// The fairness check must be able to fail: it rejects a namespace passed
// over twice while it waits, and accepts a namespace running alone once
// the other's work is done.
func TestPassedOverAtMostOnce(t *testing.T) {
	a, b := func(n string) build { return build{nsA, n} }, func(n string) build { return build{nsB, n} }
	cases := []struct {
		name  string
		order []build
		fair  bool
	}{
		{"alternating, then team-a alone", []build{b("b1"), a("a2"), b("b2"), a("a3"), a("a4")}, true},
		{"team-a first", []build{a("a2"), b("b1"), a("a3"), b("b2"), a("a4")}, true},
		{"FIFO: team-b waits behind two team-a builds", []build{a("a2"), a("a3"), b("b1"), b("b2")}, false},
		{"team-a passed over twice", []build{a("a2"), b("b1"), b("b2"), a("a3")}, false},
		{"one namespace", []build{a("a2"), a("a3")}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := passedOverAtMostOnce(c.order); (err == nil) != c.fair {
				t.Errorf("passedOverAtMostOnce(%v) = %v, want fair=%v", c.order, err, c.fair)
			}
		})
	}
}

// --- manager ---

func startManager(t *testing.T, cfg *rest.Config) *controllers.ImageBuildReconciler {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	mgr, r, err := controllers.NewManager(ctx, cfg, controllers.ManagerOptions{
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		// One slot; the reconcile workers stay at their default (8).
		MaxConcurrentBuilds:          1,
		SkipControllerNameValidation: true,
		Engine:                       engine.Config{CacheDir: t.TempDir()},
	})
	if err != nil {
		stop()
		t.Fatalf("creating the manager: %v", err)
	}
	// Read by reconciles only, which start with the manager.
	r.IntervalOf = func(ib *kilnv1.ImageBuild) (time.Duration, bool) {
		d, err := time.ParseDuration(ib.Annotations[intervalAnnotation])
		return d, err == nil && d > 0
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return r
}

func imageBuild(b build, layerURL string, reg *registry) *kilnv1.ImageBuild {
	return &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: b.name, Namespace: b.ns},
		Spec: kilnv1.ImageBuildSpec{
			Layers: []kilnv1.Layer{{Name: "app", Source: &kilnv1.Source{URL: layerURL}}},
			Target: kilnv1.Target{Image: reg.host + "/queue/" + b.name + ":1"},
		},
	}
}

// requestReconcile sets requestedAt (any new value reconciles now).
func requestReconcile(t *testing.T, c client.Client, b build, value string) {
	t.Helper()
	ib := kube.Get(t, c, b.ns, b.name)
	patch := client.MergeFrom(ib.DeepCopy())
	if ib.Annotations == nil {
		ib.Annotations = map[string]string{}
	}
	ib.Annotations[controllers.RequestedAtAnnotation] = value
	if err := c.Patch(context.Background(), ib, patch); err != nil {
		t.Fatalf("annotating %s: %v", b, err)
	}
}

// --- status waits ---

func waitQueued(t *testing.T, c client.Client, b build, position int32) {
	t.Helper()
	testkit.WaitFor(t, guard, fmt.Sprintf("%s Queued at position %d", b, position), func() (bool, string) {
		ib := kube.Get(t, c, b.ns, b.name)
		rc := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReconcilingCondition)
		ok := rc != nil && rc.Status == metav1.ConditionTrue && rc.Reason == controllers.ReasonQueued &&
			ib.Status.QueuePosition == position
		return ok, fmt.Sprintf("queuePosition %d; %s", ib.Status.QueuePosition, kube.Describe(ib))
	})

}

// waitBuilding waits for the status of a build that took the slot:
// Reconciling=True Progressing, no queue position.
func waitBuilding(t *testing.T, c client.Client, b build) {
	t.Helper()
	testkit.WaitFor(t, guard, b.name+" building", func() (bool, string) {
		ib := kube.Get(t, c, b.ns, b.name)
		rc := apimeta.FindStatusCondition(ib.Status.Conditions, kilnv1.ReconcilingCondition)
		ok := rc != nil && rc.Status == metav1.ConditionTrue && rc.Reason == engine.ReasonProgressing && ib.Status.QueuePosition == 0
		return ok, fmt.Sprintf("queuePosition %d; %s", ib.Status.QueuePosition, kube.Describe(ib))
	})

}

func waitReady(t *testing.T, c client.Client, b build) {
	t.Helper()
	testkit.WaitFor(t, guard, b.name+" Ready", func() (bool, string) {
		ib := kube.Get(t, c, b.ns, b.name)
		return engine.IsReady(ib) && ib.Status.Digest != "", kube.Describe(ib)
	})

}

// --- layer file server that holds requests ---

// gatedFiles serves layer tarballs by name. A gated layer's first request
// is announced on arrivals and its body held until release: the build
// holding the slot cannot finish before the test lets it.
type gatedFiles struct {
	srv      *httptest.Server
	arrivals chan string

	mu       sync.Mutex
	files    map[string][]byte
	gates    map[string]chan struct{}
	arrived  map[string]bool
	held     int
	heldPeak int
}

func newGatedFiles(t *testing.T) *gatedFiles {
	t.Helper()
	fs := &gatedFiles{
		arrivals: make(chan string, 64),
		files:    map[string][]byte{},
		gates:    map[string]chan struct{}{},
		arrived:  map[string]bool{},
	}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(func() {
		fs.mu.Lock()
		for name, g := range fs.gates {
			close(g) // a failed test leaves no handler hanging on Close
			delete(fs.gates, name)
		}
		fs.mu.Unlock()
		fs.srv.Close()
	})
	return fs
}

// put serves data under name, held until release when gated, and returns
// its URL.
func (fs *gatedFiles) put(name string, data []byte, gated bool) string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.files[name] = data
	if gated {
		fs.gates[name] = make(chan struct{})
	}
	return fs.srv.URL + "/" + name
}

func (fs *gatedFiles) serve(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	fs.mu.Lock()
	data, ok := fs.files[name]
	gate := fs.gates[name]
	first := !fs.arrived[name]
	fs.arrived[name] = true
	fs.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if gate != nil {
		// Headers first, body on release: the client's response-header
		// timeout does not run while the test holds the build.
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		fs.hold(+1)
		if first {
			fs.arrivals <- name
		}
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		fs.hold(-1)
	}
	_, _ = w.Write(data)
}

func (fs *gatedFiles) hold(d int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.held += d
	fs.heldPeak = max(fs.heldPeak, fs.held)
}

// next returns the name of the next gated layer requested for the first
// time.
func (fs *gatedFiles) next(t *testing.T) string {
	t.Helper()
	select {
	case name := <-fs.arrivals:
		return name
	case <-time.After(guard):
		t.Fatal("no layer request arrived")
		return ""
	}
}

func (fs *gatedFiles) release(name string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if g, ok := fs.gates[name]; ok {
		close(g)
		delete(fs.gates, name)
	}
}

// maxHeld is the most layer requests held at one time.
func (fs *gatedFiles) maxHeld() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.heldPeak
}

// --- registry counting manifest requests per repository ---

type registry struct {
	host   string
	mu     sync.Mutex
	counts map[string]int // "HEAD queue/r": manifest requests answered
}

func newRegistry(t *testing.T) *registry {
	t.Helper()
	reg := &registry{counts: map[string]int{}}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r)
		if repo, ok := manifestRepo(r.URL.Path); ok {
			reg.mu.Lock()
			reg.counts[r.Method+" "+repo]++
			reg.mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	reg.host = strings.TrimPrefix(srv.URL, "http://")
	return reg
}

// count is the number of manifest requests of method on repo answered.
func (reg *registry) count(method, repo string) int {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return reg.counts[method+" "+repo]
}

// manifestRepo returns <repo> of /v2/<repo>/manifests/<ref>.
func manifestRepo(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return "", false
	}
	i := strings.Index(rest, "/manifests/")
	if i <= 0 {
		return "", false
	}
	return rest[:i], true
}

// --- control plane and fixtures ---

func startControlPlane(t *testing.T) (*rest.Config, client.Client) {
	t.Helper()
	return kube.StartControlPlane(t, filepath.Join("..", ".."))
}
