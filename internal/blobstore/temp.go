package blobstore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Temp file names record who is writing them, so that Open can tell a file
// whose writer died (remove) from one still being written by another process
// sharing the root (keep):
//
//	<host>-<pid>-<incarnation>-<random>.tmp
//
// host is a hash of the hostname: a pid means nothing on another machine
// sharing the root over a network filesystem. incarnation is random per
// process: in a container the controller is usually pid 1 after every
// restart, so "pid 1 is alive" alone would keep a dead predecessor's files
// forever.
var (
	selfHost        = hostTag()
	selfPID         = os.Getpid()
	selfIncarnation = randomHex(4)
)

const tempSuffix = ".tmp"

func hostTag() string {
	h, err := os.Hostname()
	if err != nil {
		h = "unknown"
	}
	sum := sha256.Sum256([]byte(h))
	return hex.EncodeToString(sum[:4])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}

func tempName(host string, pid int, incarnation string) string {
	return fmt.Sprintf("%s-%d-%s-%s%s", host, pid, incarnation, randomHex(8), tempSuffix)
}

type tempOwner struct {
	host        string
	pid         int
	incarnation string
}

// parseTempName returns the owner encoded in a temp file name.
func parseTempName(name string) (tempOwner, bool) {
	base, ok := strings.CutSuffix(name, tempSuffix)
	if !ok {
		return tempOwner{}, false
	}
	parts := strings.Split(base, "-")
	if len(parts) != 4 {
		return tempOwner{}, false
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil || pid <= 0 {
		return tempOwner{}, false
	}
	return tempOwner{host: parts[0], pid: pid, incarnation: parts[2]}, true
}

// createTemp creates a new, empty, uniquely named file in tmp/.
func (s *Store) createTemp() (*os.File, error) {
	for range 10 {
		path := filepath.Join(s.tmpDir(), tempName(selfHost, selfPID, selfIncarnation))
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, errors.New("could not find an unused temp file name")
}

// TempFiles lists the files currently in tmp/ (this and other processes'
// writes in progress, and any leftovers), sorted.
func (s *Store) TempFiles() ([]string, error) {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("blob store: listing temp files: %w", err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Join(s.tmpDir(), e.Name()))
	}
	sort.Strings(out)
	return out, nil
}

// removeStaleTemps removes temp files whose writer is gone, and any file in
// tmp/ older than staleAfter whatever its name says, except one that is open:
// Windows refuses to remove it, and that must not make the store unusable.
func (s *Store) removeStaleTemps() error {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fmt.Errorf("listing temp files: %w", err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if !s.isStale(e.Name(), info) {
			continue
		}
		path := filepath.Join(s.tmpDir(), e.Name())
		switch err := os.RemoveAll(path); {
		case err == nil, errors.Is(err, fs.ErrNotExist):
		case fileInUse(err):
			// Windows only: its writer is alive after all (or on another
			// host); a later Open retries once the file is closed.
		default:
			return fmt.Errorf("removing stale temp file: %w", err)
		}
	}
	return nil
}

func (s *Store) isStale(name string, info fs.FileInfo) bool {
	if s.now().Sub(info.ModTime()) > staleAfter {
		return true
	}
	owner, ok := parseTempName(name)
	switch {
	case !ok, owner.host != selfHost:
		return false // not ours to judge before it is old
	case owner.pid == selfPID:
		return owner.incarnation != selfIncarnation // a previous process with our pid
	default:
		return !processAlive(owner.pid)
	}
}
