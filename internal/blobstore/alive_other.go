//go:build !unix

package blobstore

import "os"

// processAlive reports whether a process with this pid exists. On Windows
// FindProcess opens a handle and fails when there is no such process.
// Elsewhere it cannot tell, and claiming "alive" only delays cleanup until
// the file is staleAfter old.
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	p.Release()
	return true
}
