//go:build windows

package blobstore

import (
	"errors"
	"math"

	"golang.org/x/sys/windows"
)

// stillActive is STILL_ACTIVE (winbase.h), the exit code GetExitCodeProcess
// reports while a process runs; x/sys/windows does not name it.
const stillActive = 259

// processAlive reports whether a process with this pid is running. Opening
// the process is not enough (os.FindProcess, used before, stopped there): a
// process object outlives its process while anybody holds a handle to it, so
// the exit code decides. Every doubt counts as alive: a wrong "alive" keeps a
// dead writer's temp file until it is staleAfter old, a wrong "dead" would
// remove a file another process is still writing.
func processAlive(pid int) bool {
	if pid <= 0 || uint64(pid) > math.MaxUint32 {
		return false // not a Windows process id
	}
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if errors.Is(err, windows.ERROR_INVALID_PARAMETER) {
		return false // no process has this id
	}
	if err != nil {
		return true // it exists but is not ours to query (ACCESS_DENIED: another user, a protected process)
	}
	defer windows.CloseHandle(h)
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err != nil {
		return true
	}
	// A process that exited with status 259 looks alive: the safe mistake.
	return code == stillActive
}
