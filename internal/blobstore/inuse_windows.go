//go:build windows

package blobstore

import (
	"errors"

	"golang.org/x/sys/windows"
)

// fileInUse reports whether a removal failed because the file is open: Go
// opens files without FILE_SHARE_DELETE, so on Windows removing (or renaming
// onto) a file another process holds open fails with a sharing violation or
// ACCESS_DENIED, where Unix would unlink it under the reader.
func fileInUse(err error) bool {
	return errors.Is(err, windows.ERROR_SHARING_VIOLATION) || errors.Is(err, windows.ERROR_ACCESS_DENIED)
}
