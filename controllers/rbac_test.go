package controllers

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kiln-build/kiln/config/rbac"
)

// TestRBACGrantsExactlyWhatTheManagerUses pins every verb config/rbac
// grants, per role and resource: a new permission must be added here on
// purpose (and proven needed), and leader election's Lease must never become
// cluster-wide again.
func TestRBACGrantsExactlyWhatTheManagerUses(t *testing.T) {
	want := map[string]map[string]string{
		"ClusterRole/manager-role": {
			"configmaps":                  "get,list,watch",
			"secrets":                     "get,list,watch",
			"serviceaccounts":             "get",
			"events.k8s.io/events":        "create,patch",
			"kiln.dev/imagebuilds":        "get,list,watch",
			"kiln.dev/imagebuilds/status": "patch",
			// sourceRef layers: status.artifact read, metadata watched.
			"source.toolkit.fluxcd.io/buckets":           "get,list,watch",
			"source.toolkit.fluxcd.io/externalartifacts": "get,list,watch",
			"source.toolkit.fluxcd.io/gitrepositories":   "get,list,watch",
			"source.toolkit.fluxcd.io/ocirepositories":   "get,list,watch",
		},
		"Role/system/leader-election-role": {
			"coordination.k8s.io/leases": "create,get,update",
			"events":                     "create,patch",
		},
		"ClusterRole/imagebuild-editor-role": {
			"kiln.dev/imagebuilds":        "create,delete,get,list,patch,update,watch",
			"kiln.dev/imagebuilds/status": "get",
		},
		"ClusterRole/imagebuild-viewer-role": {
			"kiln.dev/imagebuilds":        "get,list,watch",
			"kiln.dev/imagebuilds/status": "get",
		},
	}
	roles, bindings := renderRBAC(t)
	got := map[string]map[string]string{}
	for id, rules := range roles {
		got[id] = verbsByResource(t, id, rules)
	}
	for _, id := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[id]; !ok {
			t.Errorf("unexpected role %s: %v", id, got[id])
		}
	}
	for id, w := range want {
		if !maps.Equal(got[id], w) {
			t.Errorf("%s grants\n%v\nwant\n%v", id, got[id], w)
		}
	}
	for id, rules := range got {
		if _, ok := rules["coordination.k8s.io/leases"]; ok && !strings.HasPrefix(id, "Role/") {
			t.Errorf("%s grants leases beyond the manager's namespace", id)
		}
	}
	wantBindings := map[string]string{
		"ClusterRoleBinding/manager-rolebinding":         "ClusterRole/manager-role -> ServiceAccount system/controller-manager",
		"RoleBinding/system/leader-election-rolebinding": "Role/leader-election-role -> ServiceAccount system/controller-manager",
	}
	if !maps.Equal(bindings, wantBindings) {
		t.Errorf("bindings\n%v\nwant\n%v", bindings, wantBindings)
	}
}

// renderRBAC returns the rules of every Role and ClusterRole config/rbac
// renders, by "Kind/[namespace/]name", and every binding as
// "roleRef -> subjects".
func renderRBAC(t *testing.T) (map[string][]rbacv1.PolicyRule, map[string]string) {
	t.Helper()
	objs, err := rbac.Objects()
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string][]rbacv1.PolicyRule{}
	bindings := map[string]string{}
	for _, u := range objs {
		switch u.GetKind() {
		case "ClusterRole", "Role":
			var r rbacv1.ClusterRole // same rules shape as Role
			fromUnstructured(t, u, &r)
			if r.AggregationRule != nil {
				t.Errorf("%s aggregates other roles: its grants cannot be checked here", objectID(u))
			}
			roles[objectID(u)] = r.Rules
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.RoleBinding // same shape as ClusterRoleBinding
			fromUnstructured(t, u, &b)
			var subjects []string
			for _, s := range b.Subjects {
				subjects = append(subjects, s.Kind+" "+s.Namespace+"/"+s.Name)
			}
			bindings[objectID(u)] = b.RoleRef.Kind + "/" + b.RoleRef.Name + " -> " + strings.Join(subjects, ", ")
		}
	}
	return roles, bindings
}

// verbsByResource flattens rules into "group/resource" -> sorted verbs
// (the core group has no prefix); a wildcard or a resourceName fails.
func verbsByResource(t *testing.T, id string, rules []rbacv1.PolicyRule) map[string]string {
	t.Helper()
	verbs := map[string][]string{}
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("%s: rule %v: resourceNames/nonResourceURLs are not expected", id, r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				key := res
				if g != "" {
					key = g + "/" + res
				}
				if slices.Contains(r.Verbs, "*") || g == "*" || res == "*" {
					t.Errorf("%s: wildcard in %s %v", id, key, r.Verbs)
				}
				verbs[key] = append(verbs[key], r.Verbs...)
			}
		}
	}
	out := map[string]string{}
	for k, v := range verbs {
		slices.Sort(v)
		out[k] = strings.Join(slices.Compact(v), ",")
	}
	return out
}

func objectID(u *unstructured.Unstructured) string {
	if u.GetNamespace() != "" {
		return fmt.Sprintf("%s/%s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
	}
	return u.GetKind() + "/" + u.GetName()
}

func fromUnstructured(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("%s: %v", objectID(u), err)
	}
}
