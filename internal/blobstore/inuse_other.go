//go:build !windows

package blobstore

// fileInUse is false: outside Windows an open file can be removed (readers
// keep their data), so a failed removal is a real error.
func fileInUse(error) bool { return false }
