// Package shards_test renders config/shards with `kustomize build` (the
// binary `make kustomize` installs into bin/, the Makefile's
// KUSTOMIZE_VERSION: the tool users run, not a library dependency) and checks that the Deployments it makes
// split the ImageBuilds between them and differ only where a shard must.
package shards_test

import (
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/kiln-build/kiln/controllers"
)

const selectorFlag = "--watch-label-selector="

// rendered is what one kustomization builds, by kind.
type rendered struct {
	deployments     map[string]*appsv1.Deployment
	serviceAccounts map[string]bool // namespace/name
	namespaces      []string
}

// kustomizeBin is $KUSTOMIZE, else bin/kustomize at the top of the tree.
func kustomizeBin(t *testing.T) string {
	if k := os.Getenv("KUSTOMIZE"); k != "" {
		return k
	}
	k, err := filepath.Abs(filepath.Join("..", "..", "bin", "kustomize"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(k); err != nil {
		// Never skip: a missing tool is a broken setup, and says how to fix it.
		t.Fatalf("kustomize not found at %s: run `make kustomize` (make test does)", k)
	}
	return k
}

func render(t *testing.T, dir string) rendered {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(kustomizeBin(t), "build", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, stderr.String())
	}
	out := rendered{deployments: map[string]*appsv1.Deployment{}, serviceAccounts: map[string]bool{}}
	for _, doc := range bytes.Split(stdout.Bytes(), []byte("\n---\n")) {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("decoding a document of %s: %v", dir, err)
		}
		switch meta.Kind {
		case "Deployment":
			d := &appsv1.Deployment{}
			decode(t, doc, d)
			out.deployments[d.Name] = d
		case "ServiceAccount":
			out.serviceAccounts[meta.Metadata.Namespace+"/"+meta.Metadata.Name] = true
		case "Namespace":
			out.namespaces = append(out.namespaces, meta.Metadata.Name)
		}
	}
	return out
}

func decode(t *testing.T, data []byte, into runtime.Object) {
	t.Helper()
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("decoding %T: %v\n%s", into, err, data)
	}
}

// TestShardsOverlay: the main instance and two shards, each its own
// Deployment, selector and Lease; together they reconcile every ImageBuild
// that carries no shard label or the label of a shard they run, each
// exactly once.
func TestShardsOverlay(t *testing.T) {
	got := render(t, ".")
	want := map[string]string{
		"kiln-controller-manager":        "!sharding.kiln.dev/key",
		"kiln-controller-manager-shard1": "sharding.kiln.dev/key=shard1",
		"kiln-controller-manager-shard2": "sharding.kiln.dev/key=shard2",
	}
	if names := slices.Sorted(maps.Keys(got.deployments)); !slices.Equal(names, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("Deployments %v, want %v", names, slices.Sorted(maps.Keys(want)))
	}
	if !slices.Equal(got.namespaces, []string{"kiln-system"}) {
		t.Errorf("Namespaces %v, want [kiln-system] once", got.namespaces)
	}
	selectors := map[string]labels.Selector{}
	leases := map[string]string{}
	for name, d := range got.deployments {
		c := manager(t, d)
		sel := selectorArg(t, name, c.Args)
		if sel.String() != want[name] {
			t.Errorf("%s watches %q, want %q", name, sel.String(), want[name])
		}
		selectors[name] = sel
		lease := controllers.LeaseName(sel)
		if other, dup := leases[lease]; dup {
			t.Errorf("%s and %s elect on one Lease %s", name, other, lease)
		}
		leases[lease] = name
		if d.Namespace != "kiln-system" {
			t.Errorf("%s is in namespace %q", name, d.Namespace)
		}
		if sa := d.Namespace + "/" + d.Spec.Template.Spec.ServiceAccountName; !got.serviceAccounts[sa] {
			t.Errorf("%s runs as ServiceAccount %s, which the overlay does not create (it has %v)", name, sa, slices.Sorted(maps.Keys(got.serviceAccounts)))
		}
	}
	// Every ImageBuild a running shard is meant for has exactly one owner.
	for _, l := range []map[string]string{
		{},
		{"app": "x"},
		{"sharding.kiln.dev/key": "shard1"},
		{"sharding.kiln.dev/key": "shard2", "app": "x"},
	} {
		var owners []string
		for name, sel := range selectors {
			if sel.Matches(labels.Set(l)) {
				owners = append(owners, name)
			}
		}
		if len(owners) != 1 {
			t.Errorf("an ImageBuild labelled %v is reconciled by %v, want exactly one Deployment", l, owners)
		}
	}
	// No Deployment's selector takes another's pods.
	for a, da := range got.deployments {
		sel, err := metav1.LabelSelectorAsSelector(da.Spec.Selector)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		for b, db := range got.deployments {
			if a != b && sel.Matches(labels.Set(db.Spec.Template.Labels)) {
				t.Errorf("%s's selector %v matches the pods of %s (%v)", a, sel, b, db.Spec.Template.Labels)
			}
		}
	}
}

// TestShardsRunTheMainInstancesManager: apart from the selector (and the
// pod labels that keep Deployments apart), a shard is config/default's
// manager, and the main instance of the overlay is config/default's plus
// its selector: image, arguments, probes, resources and volumes cannot
// drift between them.
func TestShardsRunTheMainInstancesManager(t *testing.T) {
	base := render(t, "../default").deployments["kiln-controller-manager"]
	if base == nil {
		t.Fatal("config/default renders no kiln-controller-manager")
	}
	want := normalized(t, base)
	for name, d := range render(t, ".").deployments {
		c := manager(t, d)
		var rest []string
		for _, a := range c.Args {
			if !strings.HasPrefix(a, selectorFlag) {
				rest = append(rest, a)
			}
		}
		if !slices.Equal(rest, manager(t, base).Args) {
			t.Errorf("%s args %v, want config/default's %v plus the selector", name, c.Args, manager(t, base).Args)
		}
		if got := normalized(t, d); got != want {
			t.Errorf("%s differs from config/default's manager beyond its selector and pod labels:\n%s\nwant\n%s", name, got, want)
		}
	}
}

// normalized is the Deployment as YAML without what shards change on
// purpose: name, selector arguments and the control-plane pod label.
func normalized(t *testing.T, d *appsv1.Deployment) string {
	t.Helper()
	d = d.DeepCopy()
	d.Name = ""
	delete(d.Spec.Selector.MatchLabels, "control-plane")
	delete(d.Spec.Template.Labels, "control-plane")
	c := &d.Spec.Template.Spec.Containers[0]
	c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, selectorFlag) })
	b, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func manager(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == "manager" {
			return c
		}
	}
	t.Fatalf("%s has no manager container", d.Name)
	return nil
}

// selectorArg parses the one --watch-label-selector of args the way
// `kiln manager` does.
func selectorArg(t *testing.T, name string, args []string) labels.Selector {
	t.Helper()
	var found []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, selectorFlag); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s has %d %s arguments (%v), want 1", name, len(found), selectorFlag, args)
	}
	sel, err := labels.Parse(found[0])
	if err != nil {
		t.Fatalf("%s: %s%s: %v", name, selectorFlag, found[0], err)
	}
	return sel
}
