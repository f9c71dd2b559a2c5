//go:build tools

// Package tools pins the etcd server so that `go build` in this wrapper module
// produces the etcd used by envtest (go install cannot: etcd's go.mod has replaces).
package tools

import _ "go.etcd.io/etcd/server/v3"
