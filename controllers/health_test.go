package controllers

// What GitOps tools read from an ImageBuild: kstatus (Flux's `wait`, and
// `kstatus`-based tools), `kubectl wait --for=condition=Ready`, and Argo CD's
// health check shipped in config/argocd. gopher-lua and cli-utils are
// imported here only: they are test dependencies.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

var (
	argoDir       = filepath.Join("..", "config", "argocd")
	argoHealthKey = "resource.customizations.health.kiln.dev_ImageBuild"
	imageBuildGVK = kilnv1.GroupVersion.WithKind("ImageBuild")
)

// health is what each tool reads from one version of an ImageBuild.
type health struct {
	kstatus kstatus.Status
	argo    string
	// ready is the Ready condition's status, "" when there is none.
	ready string
	// waitMet says `kubectl wait --for=condition=Ready` returns.
	waitMet bool
}

func (h health) String() string {
	return fmt.Sprintf("kstatus=%s argo=%s Ready=%q kubectl-wait=%v", h.kstatus, h.argo, h.ready, h.waitMet)
}

// healthOf runs every tool on u and also returns the Argo CD message.
func healthOf(t *testing.T, u *unstructured.Unstructured) (health, string) {
	t.Helper()
	res, err := kstatus.Compute(u)
	if err != nil {
		t.Fatalf("kstatus.Compute: %v", err)
	}
	argo, msg := argoHealth(t, u)
	h := health{kstatus: res.Status, argo: argo, waitMet: kubectlWaitReady(u)}
	if c := conditionOf(u, kilnv1.ReadyCondition); c != nil {
		h.ready, _ = c["status"].(string)
	}
	return h, msg
}

var argoScript = sync.OnceValues(func() ([]byte, error) {
	return os.ReadFile(filepath.Join(argoDir, "health.lua"))
})

// argoHealth runs config/argocd/health.lua on u as Argo CD runs a custom
// health check (util/lua in argo-cd): a state without the standard
// libraries, then only package, base and table opened, the object as the
// global obj, and the script's returned table read as {status, message}.
// Argo CD also opens a reduced os library, which the script does not use.
func argoHealth(t *testing.T, u *unstructured.Unstructured) (status, message string) {
	t.Helper()
	script, err := argoScript()
	if err != nil {
		t.Fatal(err)
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	// Argo CD gives a script one second; this bound only stops a loop.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	L.SetContext(ctx)
	obj, err := toLua(L, u.Object)
	if err != nil {
		t.Fatal(err)
	}
	L.SetGlobal("obj", obj)
	if err := L.DoString(string(script)); err != nil {
		t.Fatalf("health.lua: %v", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health.lua returned %s, want a table", L.Get(-1).Type())
	}
	st, ok := hs.RawGetString("status").(lua.LString)
	if !ok {
		t.Fatalf("health.lua returned status %v, want a string", hs.RawGetString("status"))
	}
	switch st {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		t.Fatalf("health.lua returned status %q, which Argo CD replaces with Unknown", st)
	}
	switch m := hs.RawGetString("message").(type) {
	case lua.LString:
		message = string(m)
	case *lua.LNilType:
	default:
		t.Fatalf("health.lua returned message %v, want a string", m)
	}
	return string(st), message
}

// toLua converts a decoded JSON object into Lua values the way Argo CD does:
// numbers become numbers, except json.Number, which arrives as a string.
func toLua(L *lua.LState, v any) (lua.LValue, error) {
	switch v := v.(type) {
	case nil:
		return lua.LNil, nil
	case bool:
		return lua.LBool(v), nil
	case string:
		return lua.LString(v), nil
	case json.Number:
		return lua.LString(v), nil
	case int64:
		return lua.LNumber(v), nil
	case int:
		return lua.LNumber(v), nil
	case float64:
		return lua.LNumber(v), nil
	case []any:
		tbl := L.CreateTable(len(v), 0)
		for _, item := range v {
			lv, err := toLua(L, item)
			if err != nil {
				return nil, err
			}
			tbl.Append(lv)
		}
		return tbl, nil
	case map[string]any:
		tbl := L.CreateTable(0, len(v))
		for k, item := range v {
			lv, err := toLua(L, item)
			if err != nil {
				return nil, err
			}
			tbl.RawSetString(k, lv)
		}
		return tbl, nil
	}
	return nil, fmt.Errorf("no Lua value for %T", v)
}

// numbersAsStrings replaces every integer in v with a json.Number, which
// Argo CD hands to Lua as a string.
func numbersAsStrings(v any) any {
	switch v := v.(type) {
	case int64:
		return json.Number(fmt.Sprint(v))
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			out[i] = numbersAsStrings(item)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, item := range v {
			out[k] = numbersAsStrings(item)
		}
		return out
	}
	return v
}

// kubectlWaitReady is the test `kubectl wait --for=condition=Ready` applies
// (kubectl's pkg/cmd/wait ConditionalWait): the first Ready condition
// decides, and it counts only when its observedGeneration, or without one
// status.observedGeneration, is not behind metadata.generation.
func kubectlWaitReady(u *unstructured.Unstructured) bool {
	c := conditionOf(u, kilnv1.ReadyCondition)
	if c == nil {
		return false
	}
	status, ok := c["status"].(string)
	if !ok {
		return false
	}
	if gen, found, _ := unstructured.NestedInt64(u.Object, "metadata", "generation"); found {
		observed, found, _ := unstructured.NestedInt64(c, "observedGeneration")
		if !found {
			observed, found, _ = unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		}
		if found && observed < gen {
			return false
		}
	}
	return strings.EqualFold(status, "True")
}

func conditionOf(u *unstructured.Unstructured, typ string) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && strings.EqualFold(fmt.Sprint(m["type"]), typ) {
			return m
		}
	}
	return nil
}

// handWritten is an ImageBuild at generation gen with the given YAML status
// (none when empty) and spec additions.
func handWritten(t *testing.T, gen int64, specYAML, statusYAML string) *unstructured.Unstructured {
	t.Helper()
	doc := fmt.Sprintf(`apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata: {name: app, namespace: team, generation: %d}
spec:
  target: {image: registry.example/app:1}
%s
`, gen, indent(specYAML, "  "))
	if statusYAML != "" {
		doc += "status:\n" + indent(statusYAML, "  ")
	}
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatalf("%v in\n%s", err, doc)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	return u
}

func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

// TestHealthOfHandWrittenStatuses pins what each tool says for each state
// kiln's status can be in, including two that kiln avoids writing because
// kstatus misreads them (no status; an observed generation with no Ready).
func TestHealthOfHandWrittenStatuses(t *testing.T) {
	const (
		readyTrue = `- {type: Ready, status: "True", reason: Succeeded, message: "pushed registry.example/app@sha256:aa", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`
	)
	cases := []struct {
		name         string
		gen          int64
		spec, status string
		want         health
		wantMessage  string // a part of Argo CD's message
	}{
		{
			name:   "new object with the CRD's default status",
			gen:    1,
			status: "observedGeneration: -1",
			want:   health{kstatus: kstatus.InProgressStatus, argo: "Progressing"},
			// Argo CD's message is the script's own.
			wantMessage: "waiting for the kiln controller to see this ImageBuild",
		},
		{
			// Why the CRD defaults status: kstatus calls an object without
			// observedGeneration and conditions Current.
			name:        "no status at all",
			gen:         1,
			want:        health{kstatus: kstatus.CurrentStatus, argo: "Progressing"},
			wantMessage: "waiting for the kiln controller to see this ImageBuild",
		},
		{
			// Why kiln writes Ready with its first status: kstatus calls an
			// observed generation without Reconciling, Stalled or Ready Current.
			name:        "observed generation and no conditions",
			gen:         1,
			status:      "observedGeneration: 1",
			want:        health{kstatus: kstatus.CurrentStatus, argo: "Progressing"},
			wantMessage: "waiting for the kiln controller to report Ready",
		},
		{
			name: "building",
			gen:  1,
			status: `observedGeneration: 1
conditions:
- {type: Reconciling, status: "True", reason: Progressing, message: "building generation 1", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Ready, status: Unknown, reason: Progressing, message: "building generation 1", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Progressing", ready: "Unknown"},
			wantMessage: "Progressing: building generation 1",
		},
		{
			// Flux's controllers, and kiln, keep the previous
			// observedGeneration until a build's outcome.
			name: "building a new generation",
			gen:  2,
			status: `observedGeneration: 1
conditions:
- {type: Reconciling, status: "True", reason: Progressing, message: "building generation 2", observedGeneration: 2, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Ready, status: Unknown, reason: Progressing, message: "building generation 2", observedGeneration: 2, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Progressing", ready: "Unknown"},
			wantMessage: "Progressing: building generation 2",
		},
		{
			name: "queued for a build slot",
			gen:  1,
			status: `observedGeneration: 1
conditions:
- {type: Reconciling, status: "True", reason: Queued, message: "waiting for a build slot", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Ready, status: Unknown, reason: Queued, message: "waiting for a build slot", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Progressing", ready: "Unknown"},
			wantMessage: "Queued: waiting for a build slot",
		},
		{
			// A retried failure leaves observedGeneration where it was.
			name: "retrying a transient error",
			gen:  1,
			status: `observedGeneration: -1
conditions:
- {type: Ready, status: "False", reason: TransientError, message: "registry answered 503", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Reconciling, status: "True", reason: TransientError, message: "retrying with backoff", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Progressing", ready: "False"},
			wantMessage: "TransientError: retrying with backoff",
		},
		{
			name:        "ready",
			gen:         1,
			status:      "observedGeneration: 1\nconditions:\n" + readyTrue,
			want:        health{kstatus: kstatus.CurrentStatus, argo: "Healthy", ready: "True", waitMet: true},
			wantMessage: "pushed registry.example/app@sha256:aa",
		},
		{
			name: "ready, base moved under updatePolicy Report",
			gen:  1,
			status: "observedGeneration: 1\nconditions:\n" + readyTrue + `
- {type: BaseUpToDate, status: "False", reason: BaseChanged, message: "base moved to sha256:bb", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.CurrentStatus, argo: "Healthy", ready: "True", waitMet: true},
			wantMessage: "BaseChanged: base moved to sha256:bb",
		},
		{
			name:        "spec changed, not yet seen",
			gen:         2,
			status:      "observedGeneration: 1\nconditions:\n" + readyTrue,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Progressing", ready: "True"},
			wantMessage: "generation 2 (status is for generation 1)",
		},
		{
			name: "stalled on a spec or content error",
			gen:  1,
			status: `observedGeneration: 1
conditions:
- {type: Ready, status: "False", reason: DigestMismatch, message: "layer \"app\": digest mismatch", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Stalled, status: "True", reason: DigestMismatch, message: "layer \"app\": digest mismatch", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.FailedStatus, argo: "Degraded", ready: "False"},
			wantMessage: `DigestMismatch: layer "app": digest mismatch`,
		},
		{
			// kiln's outside error: Ready=False and Reconciling=True with
			// the reason, observedGeneration left behind. kstatus reads
			// InProgress (a Flux wait times out), Argo CD Degraded.
			name: "outside error on a new object",
			gen:  1,
			status: `observedGeneration: -1
conditions:
- {type: Ready, status: "False", reason: SourceNotFound, message: "ConfigMap \"later\" not found", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Reconciling, status: "True", reason: SourceNotFound, message: "retrying with a backoff that grows to spec.interval", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Degraded", ready: "False"},
			wantMessage: `SourceNotFound: ConfigMap "later" not found (retrying with a backoff that grows to spec.interval)`,
		},
		{
			name: "outside error found checking a Ready object",
			gen:  3,
			status: `observedGeneration: 3
conditions:
- {type: Ready, status: "False", reason: Unauthorized, message: "registry answered 401", observedGeneration: 3, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Reconciling, status: "True", reason: Unauthorized, message: "retrying", observedGeneration: 3, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Degraded", ready: "False"},
			wantMessage: "Unauthorized: registry answered 401 (retrying)",
		},
		{
			// Ready=False keeps its reason while the retry builds: no flap.
			name: "outside error, retry build running",
			gen:  1,
			status: `observedGeneration: -1
conditions:
- {type: Ready, status: "False", reason: BaseNotFound, message: "base not found", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Reconciling, status: "True", reason: Progressing, message: "building generation 1", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Degraded", ready: "False"},
			wantMessage: "BaseNotFound: base not found",
		},
		{
			// The error was for the previous spec: the new one is untried.
			name: "outside error, spec changed since",
			gen:  2,
			status: `observedGeneration: -1
conditions:
- {type: Ready, status: "False", reason: SourceNotFound, message: "ConfigMap \"later\" not found", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Reconciling, status: "True", reason: SourceNotFound, message: "retrying", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Progressing", ready: "False"},
			wantMessage: "SourceNotFound: retrying",
		},
		{
			// kstatus falls back to Ready when neither Reconciling nor
			// Stalled is True: Ready=False is InProgress, never Failed.
			name: "Ready=False with Stalled and Reconciling False",
			gen:  1,
			status: `observedGeneration: 1
conditions:
- {type: Ready, status: "False", reason: SourceNotFound, message: "ConfigMap \"later\" not found", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Stalled, status: "False", reason: SourceNotFound, message: "retried with backoff", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}
- {type: Reconciling, status: "False", reason: SourceNotFound, message: "retried with backoff", observedGeneration: 1, lastTransitionTime: "2024-01-01T00:00:00Z"}`,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Degraded", ready: "False"},
			wantMessage: `SourceNotFound: ConfigMap "later" not found`,
		},
		{
			name:        "suspended after a spec change",
			gen:         2,
			spec:        "suspend: true",
			status:      "observedGeneration: 1\nconditions:\n" + readyTrue,
			want:        health{kstatus: kstatus.InProgressStatus, argo: "Suspended", ready: "True"},
			wantMessage: "suspended",
		},
		{
			name:        "suspended and observed",
			gen:         1,
			spec:        "suspend: true",
			status:      "observedGeneration: 1\nconditions:\n" + readyTrue,
			want:        health{kstatus: kstatus.CurrentStatus, argo: "Suspended", ready: "True", waitMet: true},
			wantMessage: "suspended",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := handWritten(t, tc.gen, tc.spec, tc.status)
			got, msg := healthOf(t, u)
			if got != tc.want {
				t.Errorf("got %s\nwant %s", got, tc.want)
			}
			if !strings.Contains(msg, tc.wantMessage) {
				t.Errorf("Argo CD message %q does not contain %q", msg, tc.wantMessage)
			}
			// Argo CD may hand numbers to Lua as strings: same answer.
			asStrings := &unstructured.Unstructured{Object: numbersAsStrings(u.Object).(map[string]any)}
			if argo, msg2 := argoHealth(t, asStrings); argo != tc.want.argo || msg2 != msg {
				t.Errorf("with numbers as strings: %s %q, want %s %q", argo, msg2, tc.want.argo, msg)
			}
		})
	}
	t.Run("being deleted", func(t *testing.T) {
		u := handWritten(t, 1, "", "observedGeneration: 1\nconditions:\n"+readyTrue)
		u.SetDeletionTimestamp(&metav1.Time{Time: time.Unix(1700000000, 0)})
		got, msg := healthOf(t, u)
		if got.kstatus != kstatus.TerminatingStatus || got.argo != "Progressing" || msg != "being deleted" {
			t.Errorf("got %s %q", got, msg)
		}
	})
}

// TestArgoCDPatchCarriesTheHealthCheck checks that argocd-cm-patch.yaml holds
// health.lua byte for byte under Argo CD's key, and that patching an existing
// argocd-cm with it (what `kubectl patch --patch-file` sends) adds the check
// and keeps the other keys.
func TestArgoCDPatchCarriesTheHealthCheck(t *testing.T) {
	script, err := argoScript()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(argoDir, "argocd-cm-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var patch corev1.ConfigMap
	if err := yaml.UnmarshalStrict(raw, &patch); err != nil {
		t.Fatal(err)
	}
	if patch.Name != "argocd-cm" || len(patch.Data) != 1 {
		t.Fatalf("patch is for %s with keys %v, want argocd-cm with one key", patch.Name, patch.Data)
	}
	if got := patch.Data[argoHealthKey]; got != string(script) {
		// Regenerate from config/argocd:
		//   { sed -n '1,/kiln.dev_ImageBuild: |$/p' argocd-cm-patch.yaml; sed 's/^./    &/' health.lua; } > p && mv p argocd-cm-patch.yaml
		t.Fatalf("argocd-cm-patch.yaml's %s differs from health.lua: regenerate it (see this test)", argoHealthKey)
	}

	ctx := context.Background()
	// Argo CD's namespace, as the patch names it; envtest never removes a
	// namespace, so a second run finds it.
	if err := env.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: patch.Namespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.k8s.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: patch.Name, Namespace: patch.Namespace}})
	})
	kube.Create(t, env.k8s, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: patch.Name, Namespace: patch.Namespace},
		Data:       map[string]string{"url": "https://argocd.example"},
	})

	body, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: patch.Name, Namespace: patch.Namespace}}
	if err := env.k8s.Patch(ctx, cm, client.RawPatch(types.StrategicMergePatchType, body)); err != nil {
		t.Fatalf("patching argocd-cm: %v", err)
	}
	if cm.Data["url"] != "https://argocd.example" || cm.Data[argoHealthKey] != string(script) {
		t.Errorf("patched argocd-cm has keys %v", keys(cm.Data))
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// versionLog records every version of the ImageBuilds in a namespace, from a
// watch, so a test can check what a tool polling at any moment could read.
type versionLog struct {
	mu       sync.Mutex
	versions []*unstructured.Unstructured
	err      error
	stop     context.CancelFunc
	done     chan struct{}
}

func watchVersions(t *testing.T, ns string) *versionLog {
	t.Helper()
	scheme, _ := NewScheme()
	wc, err := client.NewWithWatch(env.cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	vl := &versionLog{stop: cancel, done: make(chan struct{})}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(kilnv1.GroupVersion.WithKind("ImageBuildList"))
	if err := wc.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	rv := list.GetResourceVersion()
	open := func() (watch.Interface, error) {
		return wc.Watch(ctx, list, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}})
	}
	w, err := open()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(vl.done)
		for {
			for ev := range w.ResultChan() {
				u, ok := ev.Object.(*unstructured.Unstructured)
				if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
					continue
				}
				rv = u.GetResourceVersion()
				vl.mu.Lock()
				vl.versions = append(vl.versions, u)
				vl.mu.Unlock()
			}
			if ctx.Err() != nil {
				return
			}
			// The server ends watches now and then: go on from the last version.
			if w, err = open(); err != nil {
				vl.mu.Lock()
				vl.err = err
				vl.mu.Unlock()
				return
			}
		}
	}()
	t.Cleanup(vl.close)
	return vl
}

func (vl *versionLog) close() {
	vl.stop()
	<-vl.done
}

// all stops the watch and returns every version seen.
func (vl *versionLog) all(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	vl.close()
	vl.mu.Lock()
	defer vl.mu.Unlock()
	if vl.err != nil {
		t.Fatalf("watching ImageBuilds: %v", vl.err)
	}
	return vl.versions
}

func unstructuredGet(t *testing.T, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(imageBuildGVK)
	if err := env.k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, u); err != nil {
		t.Fatal(err)
	}
	return u
}

// createUnstructured creates ib and returns the API server's answer: the
// object as stored, before any controller could write to it.
func createUnstructured(t *testing.T, ib *kilnv1.ImageBuild) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ib)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(imageBuildGVK)
	if err := env.k8s.Create(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	return u
}

// updateUnstructured applies mutate to the ImageBuild and returns the API
// server's answer to the update: the new generation, before the controller
// saw it.
func updateUnstructured(t *testing.T, ns, name string, mutate func(*kilnv1.ImageBuild)) *unstructured.Unstructured {
	t.Helper()
	for range 10 {
		ib := kube.Get(t, env.k8s, ns, name)
		mutate(ib)
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ib)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		u.SetGroupVersionKind(imageBuildGVK)
		err = env.k8s.Update(context.Background(), u)
		if err == nil {
			return u
		}
		if !strings.Contains(err.Error(), "modified") {
			t.Fatalf("updating %s/%s: %v", ns, name, err)
		}
	}
	t.Fatalf("updating %s/%s: conflicts persist", ns, name)
	return nil
}

// hold makes fs hold requests for path until the returned release is
// called, then serve data.
func hold(fs *testkit.FileServer, path string, data []byte) (release func()) {
	ch := make(chan struct{})
	fs.Handle(path, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-ch:
			_, _ = w.Write(data)
		case <-r.Context().Done():
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// waitState waits until the ImageBuild's status is for its generation and
// cond holds, and returns that version.
func waitState(t *testing.T, ns, name, what string, cond func(*kilnv1.ImageBuild) bool) *unstructured.Unstructured {
	t.Helper()
	testkit.WaitFor(t, 60*time.Second, what, func() (bool, string) {
		ib := kube.Get(t, env.k8s, ns, name)
		return ib.Status.ObservedGeneration == ib.Generation && cond(ib), kube.Describe(ib)
	})
	return unstructuredGet(t, ns, name)
}

func conditionIs(typ string, status metav1.ConditionStatus, reason string) func(*kilnv1.ImageBuild) bool {
	return func(ib *kilnv1.ImageBuild) bool {
		c := kube.Condition(ib, typ)
		return c != nil && c.Status == status && (reason == "" || c.Reason == reason)
	}
}

// TestHealthThroughTheLifecycle drives one ImageBuild through a build, a
// spec change, a stall, an outside error that heals and a suspend, with the
// manager, and checks what kstatus, kubectl wait and Argo CD read at each
// point, and that no version the API server ever held makes them disagree
// or calls an unbuilt spec Current.
func TestHealthThroughTheLifecycle(t *testing.T) {
	ns := kube.Namespace(t, env.k8s)
	reg := testkit.NewRegistry(t)
	files := testkit.NewFileServer(t)
	layer := testkit.Files(t, "app/hello.txt", "hello\n")
	layerURL := files.Put("/app.tar", layer)
	release := hold(files, "/app.tar", layer)
	defer release()
	versions := watchVersions(t, ns)

	type step struct {
		name string
		u    *unstructured.Unstructured
		want health
		// wantMessage is the start of Argo CD's message.
		wantMessage string
	}
	var steps []step
	record := func(name string, u *unstructured.Unstructured, want health, wantMessage string) {
		steps = append(steps, step{name, u, want, wantMessage})
	}
	inProgress := func(ready string) health {
		return health{kstatus: kstatus.InProgressStatus, argo: "Progressing", ready: ready}
	}
	current := health{kstatus: kstatus.CurrentStatus, argo: "Healthy", ready: "True", waitMet: true}

	record("created", createUnstructured(t, simpleBuild(ns, "app", layerURL, reg, "app")),
		inProgress(""), "waiting for the kiln controller to see this ImageBuild")
	// A build in progress may still show the previous observedGeneration
	// (as Flux's controllers do until the outcome): kstatus reads the
	// generation gap or Reconciling=True, both InProgress.
	testkit.WaitFor(t, 60*time.Second, "Reconciling while the layer is held", func() (bool, string) {
		ib := kube.Get(t, env.k8s, ns, "app")
		return conditionIs(kilnv1.ReconcilingCondition, metav1.ConditionTrue, "")(ib), kube.Describe(ib)
	})
	record("building", unstructuredGet(t, ns, "app"), inProgress("Unknown"), "Progressing: ")
	release()
	record("ready", waitState(t, ns, "app", "Ready", conditionIs(kilnv1.ReadyCondition, metav1.ConditionTrue, "")),
		current, "pushed ")

	record("spec changed", updateUnstructured(t, ns, "app", func(ib *kilnv1.ImageBuild) { ib.Spec.Config.Env[0].Value = "2" }),
		inProgress("True"), "waiting for the kiln controller to see generation 2")
	record("rebuilt", waitState(t, ns, "app", "Ready", conditionIs(kilnv1.ReadyCondition, metav1.ConditionTrue, "")),
		current, "pushed ")

	wrong := "sha256:" + strings.Repeat("0", 64)
	updateUnstructured(t, ns, "app", func(ib *kilnv1.ImageBuild) { ib.Spec.Layers[0].Digest = wrong })
	record("stalled", waitState(t, ns, "app", "Stalled DigestMismatch",
		conditionIs(kilnv1.StalledCondition, metav1.ConditionTrue, "DigestMismatch")),
		health{kstatus: kstatus.FailedStatus, argo: "Degraded", ready: "False"}, "DigestMismatch: ")

	updateUnstructured(t, ns, "app", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Layers[0].Digest = ""
		ib.Spec.Layers = append(ib.Spec.Layers, kilnv1.Layer{Name: "conf", Source: &kilnv1.Source{
			ConfigMap: &kilnv1.KeySelector{Name: "later", Key: "conf.tar"}}})
	})
	// kiln retries an outside error without concluding the generation
	// (observedGeneration stays), so wait on Ready's own generation.
	testkit.WaitFor(t, 60*time.Second, "Ready=False SourceNotFound", func() (bool, string) {
		ib := kube.Get(t, env.k8s, ns, "app")
		c := kube.Condition(ib, kilnv1.ReadyCondition)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "SourceNotFound" && c.ObservedGeneration == ib.Generation, kube.Describe(ib)
	})
	record("external error", unstructuredGet(t, ns, "app"),
		health{kstatus: kstatus.InProgressStatus, argo: "Degraded", ready: "False"}, "SourceNotFound: ")
	kube.Create(t, env.k8s, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: ns},
		BinaryData: map[string][]byte{"conf.tar": testkit.Files(t, "etc/conf", "c\n")}})

	record("healed", waitState(t, ns, "app", "Ready without touching the ImageBuild",
		conditionIs(kilnv1.ReadyCondition, metav1.ConditionTrue, "")),
		current, "pushed ")

	record("suspended", updateUnstructured(t, ns, "app", func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = true }),
		health{kstatus: kstatus.InProgressStatus, argo: "Suspended", ready: "True"}, "suspended")

	var table strings.Builder
	fmt.Fprintf(&table, "\n%-15s %-11s %-12s %-8s %-13s %s\n", "state", "kstatus", "Argo CD", "Ready", "kubectl wait", "Argo CD message")
	for _, s := range steps {
		got, msg := healthOf(t, s.u)
		fmt.Fprintf(&table, "%-15s %-11s %-12s %-8s %-13v %s\n", s.name, got.kstatus, got.argo, got.ready, got.waitMet, msg)
		if got != s.want {
			t.Errorf("%s: got %s\nwant %s\nobject: %s", s.name, got, s.want, statusJSON(s.u))
		}
		if !strings.HasPrefix(msg, s.wantMessage) {
			t.Errorf("%s: Argo CD message %q does not start with %q", s.name, msg, s.wantMessage)
		}
	}
	t.Log(table.String())

	all := versions.all(t)
	if len(all) < len(steps) {
		t.Fatalf("watched %d versions, fewer than the %d steps", len(all), len(steps))
	}
	for _, u := range all {
		checkToolsAgree(t, u)
	}
	t.Logf("%d versions watched", len(all))
}

// checkToolsAgree checks one version of an ImageBuild: the tools agree on
// whether it is done, and none calls it done unless the current generation
// is built and Ready.
func checkToolsAgree(t *testing.T, u *unstructured.Unstructured) {
	t.Helper()
	h, msg := healthOf(t, u)
	gen := u.GetGeneration()
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	stalled := conditionOf(u, kilnv1.StalledCondition)
	isStalled := stalled != nil && stalled["status"] == "True"
	where := fmt.Sprintf("resourceVersion %s (%s, Argo CD %q): %s", u.GetResourceVersion(), h, msg, statusJSON(u))
	if h.kstatus == kstatus.CurrentStatus && (h.ready != "True" || observed != gen) {
		t.Errorf("kstatus Current for a generation that is not built and Ready: %s", where)
	}
	if (h.kstatus == kstatus.CurrentStatus) != h.waitMet {
		t.Errorf("kstatus and kubectl wait disagree: %s", where)
	}
	// Stalled=True of an older generation is InProgress: the new spec may fix it.
	if (h.kstatus == kstatus.FailedStatus) != (isStalled && observed == gen) {
		t.Errorf("kstatus Failed is not Stalled=True for this generation: %s", where)
	}
	if suspended, _, _ := unstructured.NestedBool(u.Object, "spec", "suspend"); suspended {
		if h.argo != "Suspended" {
			t.Errorf("Argo CD does not say Suspended: %s", where)
		}
		return
	}
	if h.argo == "Degraded" && h.ready != "False" {
		t.Errorf("Argo CD Degraded without Ready=False: %s", where)
	}
	var argoOK bool
	switch h.kstatus {
	case kstatus.CurrentStatus:
		argoOK = h.argo == "Healthy"
	case kstatus.FailedStatus:
		argoOK = h.argo == "Degraded"
	case kstatus.InProgressStatus:
		// The one difference: an outside error is Degraded to Argo CD.
		argoOK = h.argo == "Progressing" || (h.argo == "Degraded" && h.ready == "False" && !isStalled)
	}
	if !argoOK {
		t.Errorf("Argo CD disagrees with kstatus: %s", where)
	}
	// kubectl wait judges Ready by the condition's observedGeneration,
	// kstatus by status.observedGeneration: a Ready=True must carry both.
	if c := conditionOf(u, kilnv1.ReadyCondition); c != nil && c["status"] == "True" {
		if g, found, _ := unstructured.NestedInt64(c, "observedGeneration"); found && g != observed {
			t.Errorf("Ready=True for generation %d, status for generation %d: %s", g, observed, where)
		}
	}
}

func statusJSON(u *unstructured.Unstructured) string {
	st, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status")
	b, _ := json.Marshal(map[string]any{"generation": u.GetGeneration(), "status": st})
	return string(b)
}
