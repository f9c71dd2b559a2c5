package sharding_test

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/controllers"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

const (
	shardKey      = "sharding.kiln.dev/key"
	leaseNS       = "kiln-system"
	ns            = "team-a"
	shardSelector = shardKey + "=shard1"
	mainSelector  = "!" + shardKey
)

// TestShardsBuildOnlyTheirOwnImageBuilds runs a shard (key=shard1) and the
// main instance (!key), both with leader election, on one API server and
// one registry. Each must hold only its own ImageBuilds in its cache, talk
// to the registry only about those, and lead its own Lease; an ImageBuild
// labelled for a shard nobody runs is left alone; relabelling hands an
// ImageBuild over.
func TestShardsBuildOnlyTheirOwnImageBuilds(t *testing.T) {
	ctrl.SetLogger(logr.Discard())
	cfg, admin := startControlPlane(t)
	ctx := t.Context()
	kube.Create(t, admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: leaseNS}})
	kube.Create(t, admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})

	host := testkit.NewRegistry(t).Host

	shard := startManager(t, cfg, shardSelector)
	main := startManager(t, cfg, mainSelector)

	builds := []struct {
		name, shard, repo string
	}{
		{"sharded", "shard1", "shard/app"},
		{"unlabelled", "", "main/app"},
		// shard2 runs nowhere: its ImageBuild must stay untouched.
		{"orphan", "shard2", "orphan/app"},
	}
	for _, b := range builds {
		kube.Create(t, admin, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: b.name, Namespace: ns},
			BinaryData: map[string][]byte{"app.tar": testkit.Files(t, "app/"+b.name+".txt", b.name+"\n")},
		})

		ib := &kilnv1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Name: b.name, Namespace: ns},
			Spec: kilnv1.ImageBuildSpec{
				Layers: []kilnv1.Layer{{Name: "app", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: b.name, Key: "app.tar"}}}},
				Target: kilnv1.Target{Image: host + "/" + b.repo + ":1"},
			},
		}
		if b.shard != "" {
			ib.Labels = map[string]string{shardKey: b.shard}
		}
		kube.Create(t, admin, ib)
	}

	waitReady(t, admin, "sharded")
	waitReady(t, admin, "unlabelled")

	// Each cache holds exactly its shard: the API server filtered the list
	// and watch, so nothing else can reach the reconciler.
	if got := cachedImageBuilds(t, shard.mgr); !slices.Equal(got, []string{"sharded"}) {
		t.Errorf("shard1's cache holds %v, want [sharded]", got)
	}
	if got := cachedImageBuilds(t, main.mgr); !slices.Equal(got, []string{"unlabelled"}) {
		t.Errorf("the main instance's cache holds %v, want [unlabelled]", got)
	}
	// Each engine pushed its own image and never contacted the other's
	// repository (not even a HEAD to check it).
	for _, c := range []struct {
		m          *instance
		own, other string
	}{
		{shard, "shard/app", "main/app"},
		{main, "main/app", "shard/app"},
	} {
		if n := c.m.reg.manifestPuts(c.own); n != 1 {
			t.Errorf("%s pushed %d manifests to %s, want 1", c.m.selector, n, c.own)
		}
		if n := c.m.reg.requests(c.other); n != 0 {
			t.Errorf("%s sent %d requests to %s, which is the other shard's", c.m.selector, n, c.other)
		}
		if n := c.m.reg.requests("orphan/app"); n != 0 {
			t.Errorf("%s sent %d requests for the shard2 ImageBuild", c.m.selector, n)
		}
	}
	if ib := kube.Get(t, admin, ns, "orphan"); len(ib.Status.Conditions) != 0 || ib.Status.Digest != "" {
		t.Errorf("the shard2 ImageBuild, which no manager watches, has status %+v", ib.Status)
	}

	// Both managers lead, each its own Lease: had they shared one, one of
	// them would still be waiting and its ImageBuild unbuilt.
	for _, m := range []*instance{shard, main} {
		select {
		case <-m.mgr.Elected():
		default:
			t.Errorf("%s is not the leader of its Lease", m.selector)
		}
	}
	wantLeases := []string{controllers.LeaseName(mustParse(t, shardSelector)), controllers.LeaseName(mustParse(t, mainSelector))}
	if wantLeases[0] == wantLeases[1] || slices.Contains(wantLeases, controllers.LeaderElectionID) {
		t.Fatalf("lease names %v: not one per selector", wantLeases)
	}
	for _, name := range wantLeases {
		var lease coordinationv1.Lease
		if err := admin.Get(ctx, types.NamespacedName{Namespace: leaseNS, Name: name}, &lease); err != nil {
			t.Errorf("Lease %s: %v", name, err)
			continue
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			t.Errorf("Lease %s has no holder", name)
		}
	}

	// Relabelling moves an ImageBuild: the main instance drops it from its
	// cache and shard1 takes it over (re-verifying its target).
	before := shard.reg.requests("main/app")
	relabel(t, admin, "unlabelled", "shard1")
	testkit.WaitFor(t, 60*time.Second, "shard1 to take over the relabelled ImageBuild", func() (bool, string) {
		s, m := cachedImageBuilds(t, shard.mgr), cachedImageBuilds(t, main.mgr)
		ok := slices.Equal(s, []string{"sharded", "unlabelled"}) && len(m) == 0 && shard.reg.requests("main/app") > before
		return ok, "shard1 caches " + strings.Join(s, ",") + "; main caches " + strings.Join(m, ",")
	})

	if n := main.reg.manifestPuts("main/app"); n != 1 {
		t.Errorf("the main instance pushed main/app %d times, want 1", n)
	}
}

// instance is one running manager and the registry traffic of its engine.
type instance struct {
	selector string
	mgr      manager.Manager
	reg      *traffic
}

func startManager(t *testing.T, cfg *rest.Config, selector string) *instance {
	t.Helper()
	m := &instance{selector: selector, reg: &traffic{next: http.DefaultTransport}}
	ctx, stop := context.WithCancel(context.Background())
	mgr, _, err := controllers.NewManager(ctx, cfg, controllers.ManagerOptions{
		MetricsBindAddress:           "0",
		HealthProbeBindAddress:       "0",
		LeaderElection:               true,
		LeaderElectionNamespace:      leaseNS,
		WatchLabelSelector:           mustParse(t, selector),
		SkipControllerNameValidation: true,
		Engine: engine.Config{
			CacheDir: t.TempDir(),
			Registry: registry.Options{Transport: m.reg},
		},
	})
	if err != nil {
		stop()
		t.Fatalf("manager %s: %v", selector, err)
	}
	m.mgr = mgr
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager %s: %v", selector, err)
		}
	})
	return m
}

// traffic counts, per repository, the requests an engine sends to the
// registry and the manifests it pushes.
type traffic struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs map[string]int
	puts map[string]int
}

func (tr *traffic) RoundTrip(r *http.Request) (*http.Response, error) {
	if repo, kind, ok := repoOf(r.URL.Path); ok {
		tr.mu.Lock()
		if tr.reqs == nil {
			tr.reqs, tr.puts = map[string]int{}, map[string]int{}
		}
		tr.reqs[repo]++
		if kind == "manifests" && r.Method == http.MethodPut {
			tr.puts[repo]++
		}
		tr.mu.Unlock()
	}
	return tr.next.RoundTrip(r)
}

func (tr *traffic) requests(repo string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.reqs[repo]
}

func (tr *traffic) manifestPuts(repo string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.puts[repo]
}

// repoOf splits /v2/<repo>/(manifests|blobs)/... into the repository and
// the kind of request.
func repoOf(path string) (repo, kind string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return "", "", false
	}
	for _, k := range []string{"manifests", "blobs"} {
		if i := strings.Index(rest, "/"+k+"/"); i > 0 {
			return rest[:i], k, true
		}
	}
	return "", "", false
}

func cachedImageBuilds(t *testing.T, mgr manager.Manager) []string {
	t.Helper()
	var list kilnv1.ImageBuildList
	if err := mgr.GetCache().List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing the cache: %v", err)
	}
	var names []string
	for _, ib := range list.Items {
		names = append(names, ib.Name)
	}
	slices.Sort(names)
	return names
}

func relabel(t *testing.T, c client.Client, name, shard string) {
	t.Helper()
	ib := kube.Get(t, c, ns, name)
	patch := client.MergeFrom(ib.DeepCopy())
	ib.Labels = map[string]string{shardKey: shard}
	if err := c.Patch(context.Background(), ib, patch); err != nil {
		t.Fatalf("labelling %s: %v", name, err)
	}
}

func waitReady(t *testing.T, c client.Client, name string) {
	t.Helper()
	testkit.WaitFor(t, 60*time.Second, name+" Ready", func() (bool, string) {
		ib := kube.Get(t, c, ns, name)
		return engine.IsReady(ib) && ib.Status.Digest != "", kube.Describe(ib)
	})

}

func startControlPlane(t *testing.T) (*rest.Config, client.Client) {
	t.Helper()
	return kube.StartControlPlane(t, filepath.Join("..", ".."))
}

func mustParse(t *testing.T, s string) labels.Selector {
	t.Helper()
	sel, err := labels.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}
