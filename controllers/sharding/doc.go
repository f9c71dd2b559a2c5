// Package sharding holds the test of label sharding: two managers with
// complementary --watch-label-selector values on one API server. It is its
// own package because the controllers package's suite already runs an
// unsharded manager on its control plane, which would build every shard's
// ImageBuilds too.
package sharding
