// Package controllers holds the ImageBuild reconciler: the glue between the
// Kubernetes API and the build engine in internal/engine. It reads the object,
// resolves what lives in the cluster (ConfigMaps, Secrets, pull secrets) in the
// object's own namespace, calls the engine and writes status.
//
// RBAC: exactly what the manager uses, cluster-wide because ImageBuilds live
// in every namespace (config/rbac/role.yaml is generated from these lines).
//   - imagebuilds: read through the informer; only status is written, by patch.
//   - configmaps, secrets: list/watch because their metadata is watched (a
//     change re-triggers the builds that use them); get because the data is
//     read directly when a build needs it. RBAC cannot grant metadata-only
//     list, so list/watch do expose bodies to this identity.
//   - serviceaccounts: get, for spec.serviceAccountName's pull secrets.
//   - gitrepositories, ocirepositories, buckets, externalartifacts
//     (source.toolkit.fluxcd.io): read-only; metadata is watched once their
//     CRDs exist (sourceWatcher) and status.artifact is read with a GET.
//   - events: created (and patched into series) through the events.k8s.io
//     API in the ImageBuild's namespace.
//
// The leader-election Lease (and its core/v1 events) needs access only in the
// manager's own namespace: config/rbac/leader_election_role.yaml, not here.
//
// +kubebuilder:rbac:groups=kiln.dev,resources=imagebuilds,verbs=get;list;watch
// +kubebuilder:rbac:groups=kiln.dev,resources=imagebuilds/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=configmaps;secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=source.toolkit.fluxcd.io,resources=gitrepositories;ocirepositories;buckets;externalartifacts,verbs=get;list;watch
package controllers
