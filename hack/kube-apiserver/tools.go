//go:build tools

// Package tools pins kube-apiserver so that `go build` in this wrapper module
// produces the control plane used by envtest, from the Go module proxy alone.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
