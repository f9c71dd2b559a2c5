// Package controllers holds the ImageBuild reconciler: the glue between the
// Kubernetes API and the build engine in internal/build. It reads the object,
// resolves what lives in the cluster (ConfigMaps, Secrets, pull secrets) in the
// object's own namespace, calls the engine and writes status.
//
// +kubebuilder:rbac:groups=kiln.dev,resources=imagebuilds,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=kiln.dev,resources=imagebuilds/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kiln.dev,resources=imagebuilds/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=configmaps;secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get
// +kubebuilder:rbac:groups="";events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
package controllers
