package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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
}

// referencesOf lists every ConfigMap and Secret the spec names: layer and
// base-archive sources, URL headers and the CA bundle. Sorted, no duplicates.
func referencesOf(spec *kilnv1.ImageBuildSpec) refs {
	var cms, secrets []string
	addSource := func(s *kilnv1.Source) {
		if s.ConfigMap != nil {
			cms = append(cms, s.ConfigMap.Name)
		}
		if s.Secret != nil {
			secrets = append(secrets, s.Secret.Name)
		}
		if s.HeadersFrom != nil {
			secrets = append(secrets, s.HeadersFrom.Name)
		}
	}
	for i := range spec.Layers {
		addSource(&spec.Layers[i].Source)
	}
	if spec.Base != nil && spec.Base.Archive != nil {
		addSource(&spec.Base.Archive.Source)
	}
	if cb := spec.Target.CABundle; cb != nil {
		if cb.ConfigMap != nil {
			cms = append(cms, cb.ConfigMap.Name)
		}
		if cb.Secret != nil {
			secrets = append(secrets, cb.Secret.Name)
		}
	}
	return refs{ConfigMaps: uniq(cms), Secrets: uniq(secrets), ServiceAccount: spec.ServiceAccountName}
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

// resolved is what a reconcile learned about the objects an ImageBuild
// depends on, before reading any ConfigMap or Secret data.
type resolved struct {
	refs refs
	// pullSecrets are the imagePullSecrets of the ServiceAccount.
	pullSecrets []string
	// fingerprint hashes uid+resourceVersion of every referenced object
	// (and "missing" for absent ones): equal fingerprints mean the build
	// would read the same data.
	fingerprint string
}

// resolveRefs computes the fingerprint from object metadata only: the
// ServiceAccount with a direct GET (there is no ServiceAccount informer),
// ConfigMaps and Secrets from the metadata-only cache.
func (r *ImageBuildReconciler) resolveRefs(ctx context.Context, ib *kilnv1.ImageBuild) (*resolved, error) {
	res := &resolved{refs: referencesOf(&ib.Spec)}
	var ids []string
	if sa := res.refs.ServiceAccount; sa != "" {
		var obj corev1.ServiceAccount
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ib.Namespace, Name: sa}, &obj)
		switch {
		case apierrors.IsNotFound(err):
			// Transient: the ServiceAccount is often applied together with the
			// ImageBuild and lands a moment later.
			return nil, failure.Transientf("serviceAccount %q not found in namespace %q", sa, ib.Namespace)
		case err != nil:
			return nil, fmt.Errorf("reading serviceAccount %q: %w", sa, err)
		}
		ids = append(ids, identity("ServiceAccount", sa, &obj.ObjectMeta))
		for _, ps := range obj.ImagePullSecrets {
			if ps.Name != "" {
				res.pullSecrets = append(res.pullSecrets, ps.Name)
			}
		}
	}
	cmIDs, err := r.metadataIDs(ctx, ib.Namespace, "ConfigMap", res.refs.ConfigMaps)
	if err != nil {
		return nil, err
	}
	secretNames := append(append([]string(nil), res.refs.Secrets...), res.pullSecrets...)
	secretIDs, err := r.metadataIDs(ctx, ib.Namespace, "Secret", uniq(secretNames))
	if err != nil {
		return nil, err
	}
	ids = append(append(ids, cmIDs...), secretIDs...)
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	res.fingerprint = "sha256:" + hex.EncodeToString(sum[:])
	return res, nil
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
			return nil, fmt.Errorf("reading %s %q metadata: %w", kind, n, err)
		default:
			ids = append(ids, identity(kind, n, &obj.ObjectMeta))
		}
	}
	return ids, nil
}

func identity(kind, name string, m *metav1.ObjectMeta) string {
	return kind + "/" + name + " " + string(m.UID) + " " + m.ResourceVersion
}

// readInputs fetches the data a build needs with direct GETs in the
// ImageBuild's namespace. A missing ConfigMap or Secret is left out: the
// engine reports it as SourceNotFound naming the layer.
func (r *ImageBuildReconciler) readInputs(ctx context.Context, ib *kilnv1.ImageBuild, res *resolved) (engine.Inputs, error) {
	in := engine.Inputs{ConfigMaps: map[string]map[string][]byte{}, Secrets: map[string]map[string][]byte{}}
	for _, n := range res.refs.ConfigMaps {
		var cm corev1.ConfigMap
		found, err := r.getDirect(ctx, ib.Namespace, n, &cm)
		if err != nil {
			return in, fmt.Errorf("reading configMap %q: %w", n, err)
		}
		if found {
			in.ConfigMaps[n] = engine.ConfigMapData(&cm)
		}
	}
	for _, n := range res.refs.Secrets {
		var s corev1.Secret
		found, err := r.getDirect(ctx, ib.Namespace, n, &s)
		if err != nil {
			return in, fmt.Errorf("reading secret %q: %w", n, err)
		}
		if found {
			in.Secrets[n] = engine.SecretData(&s)
		}
	}
	kc, err := r.keychain(ctx, ib.Namespace, res.pullSecrets)
	if err != nil {
		return in, err
	}
	in.Keychain = kc
	return in, nil
}

// keychain builds registry credentials from the ServiceAccount's pull
// secrets. Missing pull secrets are skipped, as the kubelet does; with none
// the keychain is anonymous (never the manager's own credentials).
func (r *ImageBuildReconciler) keychain(ctx context.Context, ns string, names []string) (*pullSecretKeychain, error) {
	var secrets []corev1.Secret
	for _, n := range names {
		var s corev1.Secret
		found, err := r.getDirect(ctx, ns, n, &s)
		if err != nil {
			return nil, fmt.Errorf("reading pull secret %q: %w", n, err)
		}
		if found {
			secrets = append(secrets, s)
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
