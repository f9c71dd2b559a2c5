package controllers

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
)

// Every Reason constant declared in internal/failure must be decided in
// errorPolicy: a new reason cannot slip into a default.
func TestErrorPolicyCoversEveryReason(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join("..", "internal", "failure", "failure.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "Reason" {
				for _, n := range vs.Names {
					reasons = append(reasons, n.Name)
				}
			}
		}
	}
	if len(reasons) < 10 {
		t.Fatalf("found only %d reasons in failure.go: %v", len(reasons), reasons)
	}
	decided := map[string]bool{}
	for r := range errorPolicy {
		decided[string(r)] = true
	}
	for _, name := range reasons {
		// Constant names equal their values in failure.go except Transient.
		value := name
		if name == "Transient" {
			value = string(failure.Transient)
		}
		if !decided[value] {
			t.Errorf("failure.%s is not in errorPolicy", name)
		}
	}
}

func TestErrorPolicy(t *testing.T) {
	cases := []struct {
		err  error
		want behaviour
	}{
		{failure.Permanentf(failure.DigestMismatch, "x"), stall},
		{failure.Permanentf(failure.InvalidSpec, "x"), stall},
		{failure.Permanentf(failure.LimitExceeded, "x"), stall},
		{failure.Permanentf(failure.SourceForbidden, "x"), stall},
		{failure.Permanentf(failure.BaseNotFound, "x"), retryExternal},
		{failure.Permanentf(failure.SourceNotFound, "x"), retryExternal},
		{failure.Permanentf(failure.Unauthorized, "x"), retryExternal},
		{failure.Permanentf(failure.PlatformNotFound, "x"), retryExternal},
		{failure.Permanentf(failure.PushRejected, "x"), retryExternal},
		{failure.Transientf("x"), retryTransient},
		{errString("unclassified"), retryTransient},
		{failure.Permanentf(failure.Reason("SomethingNew"), "x"), stall},
	}
	for _, c := range cases {
		if got := policyOf(c.err); got != c.want {
			t.Errorf("%s (%v): %v, want %v", failure.ReasonOf(c.err), c.err, got, c.want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestBackoffDoublesUpToTheInterval(t *testing.T) {
	cases := []struct {
		failures int32
		want     time.Duration
	}{
		{0, 5 * time.Second}, {1, 5 * time.Second}, {2, 10 * time.Second}, {3, 20 * time.Second},
		{9, 1280 * time.Second}, {10, 2560 * time.Second}, {11, time.Hour}, {1000, time.Hour},
	}
	for _, c := range cases {
		if got := backoff(5*time.Second, c.failures, time.Hour); got != c.want {
			t.Errorf("backoff after %d failures: %v, want %v", c.failures, got, c.want)
		}
	}
}

func TestRetryLimit(t *testing.T) {
	cases := []struct {
		b        behaviour
		interval time.Duration
		want     time.Duration
	}{
		{retryTransient, time.Hour, MaxTransientBackoff},
		{retryTransient, 2 * time.Minute, 2 * time.Minute},
		{retryExternal, time.Hour, time.Hour},
		{retryExternal, 2 * time.Minute, 2 * time.Minute},
	}
	for _, c := range cases {
		if got := retryLimit(c.b, c.interval); got != c.want {
			t.Errorf("retryLimit(%s, %v) = %v, want %v", c.b, c.interval, got, c.want)
		}
	}
}

// The jitter is fixed per uid, within ±10%, and spreads objects: 1000 uids
// cover most of the window.
func TestJitterIsStableBoundedAndSpread(t *testing.T) {
	const d = time.Hour
	buckets := map[int]bool{}
	for i := range 1000 {
		uid := uuid.NewUUID() // random, as the API server's
		if i == 0 {
			uid = "fixed"
		}
		j := jittered(d, uid)
		if j != jittered(d, uid) {
			t.Fatalf("jitter of %s not stable", uid)
		}
		if j < d*9/10 || j > d*11/10 {
			t.Fatalf("jitter of %s: %v outside ±10%% of %v", uid, j, d)
		}
		buckets[int((j-d*9/10)/(d/100))] = true // 20 buckets of 36s
	}
	if len(buckets) < 18 {
		t.Errorf("1000 objects fall in %d of 20 buckets of the jitter window", len(buckets))
	}
}

// The fingerprint changes with the bytes kiln reads and with nothing else.
func TestContentFingerprint(t *testing.T) {
	spec := &kilnv1.ImageBuildSpec{
		ServiceAccountName: "builder",
		Layers: []kilnv1.Layer{
			{Name: "conf", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "cm", Key: "used"}}},
			{Name: "sec", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "sec", Key: "layer"}}},
			{Name: "web", Source: &kilnv1.Source{URL: "https://h/x.tar", HeadersFrom: &kilnv1.LocalObjectReference{Name: "hdr"}}},
		},
	}
	base := func() *objects {
		return &objects{
			configMaps: map[string]*corev1.ConfigMap{"cm": {
				ObjectMeta: metav1.ObjectMeta{Name: "cm", UID: "cm-uid", ResourceVersion: "1"},
				Data:       map[string]string{"used": "a", "other": "b"},
			}},
			secrets: map[string]*corev1.Secret{
				"sec":  {ObjectMeta: metav1.ObjectMeta{Name: "sec", UID: "sec-uid"}, Data: map[string][]byte{"layer": []byte("s"), "unused": []byte("u")}},
				"hdr":  {ObjectMeta: metav1.ObjectMeta{Name: "hdr", UID: "hdr-uid"}, Data: map[string][]byte{"Authorization": []byte("Bearer t")}},
				"pull": {ObjectMeta: metav1.ObjectMeta{Name: "pull", UID: "pull-uid"}, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`), "note": []byte("x")}},
			},
		}
	}
	pulls := []string{"pull"}
	want := contentFingerprint(spec, pulls, base())
	cases := []struct {
		name    string
		edit    func(o *objects)
		pulls   []string
		changed bool
	}{
		{"labels and resourceVersion", func(o *objects) {
			o.configMaps["cm"].Labels = map[string]string{"x": "y"}
			o.configMaps["cm"].ResourceVersion = "2"
			o.secrets["sec"].Annotations = map[string]string{"a": "b"}
		}, pulls, false},
		{"an unused ConfigMap key", func(o *objects) { o.configMaps["cm"].Data["other"] = "c" }, pulls, false},
		{"an unused Secret key", func(o *objects) { o.secrets["sec"].Data["unused"] = []byte("v") }, pulls, false},
		{"an unused pull secret key", func(o *objects) { o.secrets["pull"].Data["note"] = []byte("y") }, pulls, false},
		{"the used ConfigMap key", func(o *objects) { o.configMaps["cm"].Data["used"] = "A" }, pulls, true},
		{"the used key moved to binaryData", func(o *objects) {
			delete(o.configMaps["cm"].Data, "used")
			o.configMaps["cm"].BinaryData = map[string][]byte{"used": []byte("A")}
		}, pulls, true},
		{"the used Secret key", func(o *objects) { o.secrets["sec"].Data["layer"] = []byte("S") }, pulls, true},
		{"a header added", func(o *objects) { o.secrets["hdr"].Data["X-Extra"] = []byte("1") }, pulls, true},
		{"pull secret credentials", func(o *objects) {
			o.secrets["pull"].Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{"r":{}}}`)
		}, pulls, true},
		{"the pull-secret list", func(*objects) {}, []string{"pull", "pull2"}, true},
		{"a ConfigMap deleted", func(o *objects) { delete(o.configMaps, "cm") }, pulls, true},
		{"a Secret re-created (new uid)", func(o *objects) { o.secrets["sec"].UID = "sec-uid-2" }, pulls, true},
	}
	for _, c := range cases {
		o := base()
		c.edit(o)
		got := contentFingerprint(spec, c.pulls, o)
		if (got != want) != c.changed {
			t.Errorf("%s: fingerprint changed=%v, want %v", c.name, got != want, c.changed)
		}
	}
	// A Secret value enters only through an HMAC keyed by its uid: a plain
	// sha256 of the value is nowhere in the lines.
	for _, l := range objectLines(objectRef{kindSecret, "sec"}, []string{"layer"}, base()) {
		if l == "Secret/sec[layer] "+sha256Of([]byte("s")) {
			t.Errorf("secret value hashed without a key: %s", l)
		}
	}
}
