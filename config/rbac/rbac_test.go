package rbac_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/config/rbac"
	"github.com/kiln-build/kiln/controllers"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// managerUser is the identity the rendered RBAC binds: the ServiceAccount
// controller-manager in namespace system (config/default renames both).
const (
	managerNamespace = "system"
	managerUser      = "system:serviceaccount:" + managerNamespace + ":controller-manager"
)

// TestManagerBuildsWithOnlyTheRenderedRBAC runs the real manager, with
// leader election, as the ServiceAccount config/rbac binds and with nothing
// else: a build that reads a ConfigMap and a ServiceAccount must become Ready
// and leave an event, and the Lease must be reachable only in the manager's
// namespace. controllers/rbac_test.go pins the exact verbs; this proves they
// are enough.
func TestManagerBuildsWithOnlyTheRenderedRBAC(t *testing.T) {
	ctrl.SetLogger(logr.Discard())
	te := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assetsDir(),
	}
	if _, err := te.Start(); err != nil {
		t.Fatalf("starting envtest control plane (run `make envtest-assets`): %v", err)
	}
	t.Cleanup(func() { _ = te.Stop() })
	scheme, err := controllers.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(te.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	kube.Create(t, admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: managerNamespace}})
	applyRBAC(t, admin)

	user, err := te.AddUser(envtest.User{Name: managerUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + managerNamespace, "system:authenticated"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	mgr, _, err := controllers.NewManager(mgrCtx, user.Config(), controllers.ManagerOptions{
		MetricsBindAddress:      "0",
		HealthProbeBindAddress:  "0",
		LeaderElection:          true,
		LeaderElectionNamespace: managerNamespace,
		Engine:                  engine.Config{CacheDir: t.TempDir()},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	reg := testkit.NewRegistry(t)
	ns := "team-a"
	kube.Create(t, admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	kube.Create(t, admin, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "builder", Namespace: ns}})
	kube.Create(t, admin, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: ns},
		BinaryData: map[string][]byte{"app.tar": testkit.Files(t, "app/hello.txt", "hello\n")},
	})

	kube.Create(t, admin, &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec: kilnv1.ImageBuildSpec{
			Layers:             []kilnv1.Layer{{Name: "app", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "files", Key: "app.tar"}}}},
			ServiceAccountName: "builder",
			Target:             kilnv1.Target{Image: reg.Host + "/team/app:1"},
		},
	})

	testkit.WaitFor(t, 60*time.Second, "ImageBuild Ready", func() (bool, string) {
		ib := &kilnv1.ImageBuild{}
		if err := admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: "app"}, ib); err != nil {
			return false, err.Error()
		}
		for _, c := range ib.Status.Conditions {
			if c.Type == kilnv1.ReadyCondition {
				return c.Status == metav1.ConditionTrue, c.Reason + ": " + c.Message
			}
		}
		return false, "no Ready condition"
	})

	testkit.WaitFor(t, 60*time.Second, "an event about the build", func() (bool, string) {
		var events eventsv1.EventList
		if err := admin.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		return len(events.Items) > 0, "no events in " + ns
	})

	testkit.WaitFor(t, 60*time.Second, "the leader-election Lease", func() (bool, string) {
		err := admin.Get(ctx, types.NamespacedName{Namespace: managerNamespace, Name: controllers.LeaderElectionID}, &coordinationv1.Lease{})
		return err == nil, "lease: " + errString(err)
	})

	// The same identity may not touch Leases anywhere else.
	as, err := client.New(user.Config(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	err = as.Get(ctx, types.NamespacedName{Namespace: "kube-system", Name: controllers.LeaderElectionID}, &coordinationv1.Lease{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("reading a Lease in kube-system as the manager: got %v, want Forbidden", err)
	}
}

func applyRBAC(t *testing.T, admin client.Client) {
	t.Helper()
	objs, err := rbac.Objects()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		kube.Create(t, admin, o)
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func assetsDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "bin", "k8s")
}
