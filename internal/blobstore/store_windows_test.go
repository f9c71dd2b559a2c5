package blobstore

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestProcessAliveWindows(t *testing.T) {
	exited := exec.Command("cmd", "/c", "exit 0")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pid  int
		want bool
	}{
		{name: "this process", pid: os.Getpid(), want: true},
		{name: "parent", pid: os.Getppid(), want: true},
		{name: "exited child", pid: exited.Process.Pid, want: false},
		{name: "no such pid", pid: 1 << 30, want: false},
		{name: "zero", pid: 0, want: false},
		{name: "largest int", pid: math.MaxInt, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := processAlive(tt.pid); got != tt.want {
				t.Errorf("processAlive(%d) = %v, want %v", tt.pid, got, tt.want)
			}
		})
	}
}

// A temp file that is stale by age but still open cannot be removed on
// Windows; Open must keep it rather than fail.
func TestOpenKeepsStaleTempInUse(t *testing.T) {
	root := t.TempDir()
	tmp := filepath.Join(root, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(tmp, "old-foreign-file")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := time.Now().Add(-2 * staleAfter)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err == nil || !fileInUse(err) {
		t.Fatalf("removing an open file: %v, want an in-use error", err)
	}
	if _, err := Open(root, Options{}); err != nil {
		t.Fatalf("Open with a stale temp file in use: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the open temp file is gone: %v", err)
	}
}
