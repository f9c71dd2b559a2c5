package controllers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/failure"
)

// Field indexes on ImageBuilds, so that a ConfigMap or Secret event finds the
// ImageBuilds of its namespace that reference it without a full scan.
const (
	configMapIndex = "kiln.dev/configMapRefs"
	secretIndex    = "kiln.dev/secretRefs"
)

// refs are the names of the objects an ImageBuild reads, all in its own
// namespace: the API has no namespace field for them, and the controller
// never adds one.
type refs struct {
	ConfigMaps     []string
	Secrets        []string
	ServiceAccount string
	// SourceRefs are the Flux sources (spec.SourceRefs).
	SourceRefs []kilnv1.SourceReference
}

// referencesOf lists every ConfigMap and Secret the spec names
// (ImageBuildSpec.References: sources, the CA bundle, the signing key).
// Sorted, no duplicates.
func referencesOf(spec *kilnv1.ImageBuildSpec) refs {
	var cms, secrets []string
	for _, r := range spec.References() {
		if r.Kind == kindConfigMap {
			cms = append(cms, r.Name)
		} else {
			secrets = append(secrets, r.Name)
		}
	}
	return refs{ConfigMaps: uniq(cms), Secrets: uniq(secrets), ServiceAccount: spec.ServiceAccountName, SourceRefs: spec.SourceRefs()}
}

// uniq sorts s in place and drops repeats; nil stays nil.
func uniq(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

func indexConfigMaps(o client.Object) []string {
	ib, ok := o.(*kilnv1.ImageBuild)
	if !ok {
		return nil
	}
	return referencesOf(&ib.Spec).ConfigMaps
}

func indexSecrets(o client.Object) []string {
	ib, ok := o.(*kilnv1.ImageBuild)
	if !ok {
		return nil
	}
	return referencesOf(&ib.Spec).Secrets
}

// usedKeys lists, per object, the keys kiln reads from it ("*" = all keys:
// a headersFrom Secret sends every key as a header, a configMapDir or
// secretDir writes every key as a file). Only these enter the
// content fingerprint: a change to any other key, or to metadata, builds
// nothing.
func usedKeys(spec *kilnv1.ImageBuildSpec) map[objectRef][]string {
	out := map[objectRef][]string{}
	add := func(kind, name, key string) {
		ref := objectRef{kind, name}
		if !slices.Contains(out[ref], key) {
			out[ref] = append(out[ref], key)
		}
	}
	for _, r := range spec.References() {
		add(r.Kind, r.Name, r.Key)
	}
	for _, keys := range out {
		slices.Sort(keys)
	}
	return out
}

const (
	kindConfigMap = "ConfigMap"
	kindSecret    = "Secret"
	allKeys       = kilnv1.AllKeys
)

type objectRef struct{ kind, name string }

// pullSecretKeys are the keys newPullSecretKeychain reads.
var pullSecretKeys = []string{corev1.DockerConfigJsonKey, corev1.DockerConfigKey}

// resolved is what a reconcile learned about the objects an ImageBuild
// depends on.
type resolved struct {
	refs refs
	// pullSecrets are the imagePullSecrets of the ServiceAccount, in order.
	pullSecrets []string
	// fingerprint is the content fingerprint (contentFingerprint) of the
	// inputs as they are now: equal fingerprints mean a build would read
	// the same bytes.
	fingerprint string
}

// A Flux source's artifact is read with a direct GET on every reconcile
// (not from the metadata cache, which has no watch until the kind is
// served); its digest and revision enter the fingerprint, so a new
// artifact rebuilds and an unchanged one never does.

// objects are the ConfigMaps and Secrets of one namespace a build reads,
// by name; an absent name was not found.
type objects struct {
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	// artifacts of the sourceRefs, by engine.ArtifactKey.
	artifacts map[string]engine.Artifact
}

// resolveInputs reads the ServiceAccount (a direct GET: there is no
// ServiceAccount informer) and computes the content fingerprint. The data
// of ConfigMaps and Secrets is read (direct GETs, never cached) only when
// their metadata in the metadata-only cache changed since the memo's
// fingerprint was computed: a resync or an unrelated event costs no data
// read, and a label edit costs one re-read that finds the same fingerprint.
func (r *ImageBuildReconciler) resolveInputs(ctx context.Context, ib *kilnv1.ImageBuild, m *memo) (*resolved, error) {
	res := &resolved{refs: referencesOf(&ib.Spec)}
	ids := []string{}
	if sa := res.refs.ServiceAccount; sa != "" {
		var obj corev1.ServiceAccount
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ib.Namespace, Name: sa}, &obj)
		switch {
		case apierrors.IsNotFound(err):
			// Transient: the ServiceAccount is often applied together with the
			// ImageBuild and lands a moment later.
			return nil, failure.Transientf("serviceAccount %q not found in namespace %q", sa, ib.Namespace)
		case err != nil:
			return nil, failure.Retryable(fmt.Errorf("reading serviceAccount %q: %w", sa, err), 0)
		}
		for _, ps := range obj.ImagePullSecrets {
			if ps.Name != "" {
				res.pullSecrets = append(res.pullSecrets, ps.Name)
			}
		}
		ids = append(ids, "ServiceAccount/"+sa+" pullSecrets="+strings.Join(res.pullSecrets, ","))
	}
	cmIDs, err := r.metadataIDs(ctx, ib.Namespace, kindConfigMap, res.refs.ConfigMaps)
	if err != nil {
		return nil, err
	}
	secretIDs, err := r.metadataIDs(ctx, ib.Namespace, kindSecret, res.secretNames())
	if err != nil {
		return nil, err
	}
	arts, err := r.readArtifacts(ctx, ib.Namespace, res.refs.SourceRefs)
	if err != nil {
		return nil, err
	}
	ids = append(ids, artifactLines(res.refs.SourceRefs, arts)...)
	metaID := digestOf(append(append(ids, cmIDs...), secretIDs...))
	if m.metaID == metaID && m.fingerprint != "" {
		res.fingerprint = m.fingerprint
		return res, nil
	}
	objs, err := r.readObjects(ctx, ib.Namespace, res)
	if err != nil {
		return nil, err
	}
	objs.artifacts = arts
	res.fingerprint = contentFingerprint(&ib.Spec, res.pullSecrets, objs)
	m.metaID, m.fingerprint = metaID, res.fingerprint
	return res, nil
}

// secretNames are the referenced Secrets and the pull secrets, sorted.
func (res *resolved) secretNames() []string {
	return uniq(append(append([]string(nil), res.refs.Secrets...), res.pullSecrets...))
}

// metadataIDs reads objects' metadata from the metadata cache.
func (r *ImageBuildReconciler) metadataIDs(ctx context.Context, ns, kind string, names []string) ([]string, error) {
	var ids []string
	for _, n := range names {
		obj := &metav1.PartialObjectMetadata{}
		obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(kind))
		err := r.metadataReader().Get(ctx, types.NamespacedName{Namespace: ns, Name: n}, obj)
		switch {
		case apierrors.IsNotFound(err):
			ids = append(ids, kind+"/"+n+" missing")
		case err != nil:
			return nil, failure.Retryable(fmt.Errorf("reading %s %q metadata: %w", kind, n, err), 0)
		default:
			ids = append(ids, kind+"/"+n+" "+string(obj.UID)+" "+obj.ResourceVersion)
		}
	}
	return ids, nil
}

// readObjects reads every referenced ConfigMap and Secret (pull secrets
// included) with direct GETs in the ImageBuild's namespace.
func (r *ImageBuildReconciler) readObjects(ctx context.Context, ns string, res *resolved) (*objects, error) {
	objs := &objects{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	for _, n := range res.refs.ConfigMaps {
		cm := &corev1.ConfigMap{}
		found, err := r.getDirect(ctx, ns, n, cm)
		if err != nil {
			return nil, failure.Retryable(fmt.Errorf("reading configMap %q: %w", n, err), 0)
		}
		if found {
			objs.configMaps[n] = cm
		}
	}
	for _, n := range res.secretNames() {
		s := &corev1.Secret{}
		found, err := r.getDirect(ctx, ns, n, s)
		if err != nil {
			return nil, failure.Retryable(fmt.Errorf("reading secret %q: %w", n, err), 0)
		}
		if found {
			objs.secrets[n] = s
		}
	}
	return objs, nil
}

// contentFingerprint hashes what a build uses of its inputs: the
// pull-secret list, each used key of each ConfigMap and Secret (absent
// objects and keys included, so that creating one counts as a change), and
// the registry credentials of each pull secret. Secret values enter only
// through an HMAC keyed by the Secret's uid: status shows the fingerprint,
// and a plain hash would let a reader of status confirm a guess of a
// secret, while the uid is known only to those who may read the Secret.
func contentFingerprint(spec *kilnv1.ImageBuildSpec, pullSecrets []string, objs *objects) string {
	var lines []string
	if spec.ServiceAccountName != "" {
		lines = append(lines, "ServiceAccount/"+spec.ServiceAccountName+" pullSecrets="+strings.Join(pullSecrets, ","))
	}
	used := usedKeys(spec)
	for _, ps := range pullSecrets {
		ref := objectRef{kindSecret, ps}
		for _, k := range pullSecretKeys {
			if !slices.Contains(used[ref], k) {
				used[ref] = append(used[ref], k)
			}
		}
	}
	refs := make([]objectRef, 0, len(used))
	for ref := range used {
		refs = append(refs, ref)
	}
	slices.SortFunc(refs, func(a, b objectRef) int { return strings.Compare(a.kind+"/"+a.name, b.kind+"/"+b.name) })
	for _, ref := range refs {
		lines = append(lines, objectLines(ref, used[ref], objs)...)
	}
	lines = append(lines, artifactLines(spec.SourceRefs(), objs.artifacts)...)
	return digestOf(lines)
}

// objectLines are the fingerprint lines of one object's used keys.
func objectLines(ref objectRef, keys []string, objs *objects) []string {
	prefix := ref.kind + "/" + ref.name
	var data map[string][]byte
	var mac func([]byte) string
	switch ref.kind {
	case kindConfigMap:
		cm, ok := objs.configMaps[ref.name]
		if !ok {
			return []string{prefix + " missing"}
		}
		data = engine.ConfigMapData(cm)
		mac = sha256Of
	default:
		s, ok := objs.secrets[ref.name]
		if !ok {
			return []string{prefix + " missing"}
		}
		data = engine.SecretData(s)
		key := []byte(s.UID)
		mac = func(b []byte) string {
			h := hmac.New(sha256.New, key)
			h.Write(b)
			return "hmac:" + hex.EncodeToString(h.Sum(nil))
		}
	}
	if slices.Contains(keys, allKeys) {
		keys = slices.Sorted(maps.Keys(data))
	}
	lines := make([]string, 0, len(keys))
	for _, k := range keys {
		if v, ok := data[k]; ok {
			lines = append(lines, prefix+"["+k+"] "+mac(v))
		} else {
			lines = append(lines, prefix+"["+k+"] absent")
		}
	}
	return lines
}

func sha256Of(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func digestOf(lines []string) string { return sha256Of([]byte(strings.Join(lines, "\n"))) }

// buildInputs reads what a build needs, fresh when the build starts (it may
// have waited for a slot): the objects' data, the keychain, and the content
// fingerprint of exactly that data, which status records. A missing
// ConfigMap or Secret is left out: the engine reports it as SourceNotFound
// naming the layer.
func (r *ImageBuildReconciler) buildInputs(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved) (engine.Inputs, string, error) {
	objs, err := r.readObjects(ctx, ib.Namespace, res)
	if err != nil {
		return engine.Inputs{}, "", err
	}
	if objs.artifacts, err = r.readArtifacts(ctx, ib.Namespace, res.refs.SourceRefs); err != nil {
		return engine.Inputs{}, "", err
	}
	in := engine.Inputs{ConfigMaps: map[string]map[string][]byte{}, Secrets: map[string]map[string][]byte{}, Artifacts: objs.artifacts}
	for n, cm := range objs.configMaps {
		in.ConfigMaps[n] = engine.ConfigMapData(cm)
	}
	for _, n := range res.refs.Secrets {
		if s, ok := objs.secrets[n]; ok {
			in.Secrets[n] = engine.SecretData(s)
		}
	}
	kc, err := keychainOf(res.pullSecrets, objs)
	if err != nil {
		return in, "", err
	}
	in.Keychain = kc
	return in, contentFingerprint(&ib.Spec, res.pullSecrets, objs), nil
}

// checkInputs reads only what registry access needs (pull secrets and the
// CA bundle, never layer data) for the checks the controller asks the
// engine for (TargetHolds, ResolveBase).
func (r *ImageBuildReconciler) checkInputs(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved) (engine.Inputs, error) {
	in := engine.Inputs{ConfigMaps: map[string]map[string][]byte{}, Secrets: map[string]map[string][]byte{}}
	objs := &objects{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	names := append([]string(nil), res.pullSecrets...)
	cb := ib.Spec.Target.CABundle
	if cb != nil && cb.Secret != nil {
		names = append(names, cb.Secret.Name)
	}
	for _, n := range uniq(names) {
		s := &corev1.Secret{}
		found, err := r.getDirect(ctx, ib.Namespace, n, s)
		if err != nil {
			return in, failure.Retryable(fmt.Errorf("reading secret %q: %w", n, err), 0)
		}
		if found {
			objs.secrets[n] = s
		}
	}
	kc, err := keychainOf(res.pullSecrets, objs)
	if err != nil {
		return in, err
	}
	in.Keychain = kc
	switch {
	case cb != nil && cb.ConfigMap != nil:
		cm := &corev1.ConfigMap{}
		if _, err := r.getDirect(ctx, ib.Namespace, cb.ConfigMap.Name, cm); err != nil {
			return in, failure.Retryable(fmt.Errorf("reading CA bundle configMap %q: %w", cb.ConfigMap.Name, err), 0)
		}
		in.ConfigMaps[cb.ConfigMap.Name] = engine.ConfigMapData(cm)
	case cb != nil && cb.Secret != nil:
		if s, ok := objs.secrets[cb.Secret.Name]; ok {
			in.Secrets[cb.Secret.Name] = engine.SecretData(s)
		}
	}
	return in, nil
}

// keychainOf builds registry credentials from the ServiceAccount's pull
// secrets, in their order. Missing pull secrets are skipped, as the kubelet
// does; with none the keychain is anonymous (never the manager's own
// credentials).
func keychainOf(names []string, objs *objects) (*pullSecretKeychain, error) {
	var secrets []corev1.Secret
	for _, n := range names {
		if s, ok := objs.secrets[n]; ok {
			secrets = append(secrets, *s)
		}
	}
	kc, err := newPullSecretKeychain(secrets)
	if err != nil {
		return nil, failure.Permanent(failure.Unauthorized, err)
	}
	return kc, nil
}

func (r *ImageBuildReconciler) getDirect(ctx context.Context, ns, name string, obj client.Object) (bool, error) {
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, obj)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}
