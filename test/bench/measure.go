package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sample is one measured run of a case: possibly several processes run
// one after the other (the crane pipeline), summed.
type sample struct {
	Wall     time.Duration `json:"wallNs"`
	CPU      time.Duration `json:"cpuNs"` // user+sys of the child processes (and their children)
	MaxRSSKB int64         `json:"maxRssKiB"`
	Upload   *uploadStats  `json:"upload,omitempty"`
	// KilnBytesOut is status.lastBuild.bytesOut as kiln reported it.
	KilnBytesOut int64  `json:"kilnBytesOut,omitempty"`
	KilnResult   string `json:"kilnResult,omitempty"`
}

func (s *sample) add(o sample) {
	s.Wall += o.Wall
	s.CPU += o.CPU
	s.MaxRSSKB = max(s.MaxRSSKB, o.MaxRSSKB)
}

// runProc runs argv and measures it through wait4's rusage, which covers
// the process and every descendant it waited for (so `bash -c 'a | b'`
// counts a and b; Maxrss is then the largest of them). stdout is returned.
func runProc(ctx context.Context, env []string, argv ...string) (sample, []byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if env != nil {
		cmd.Env = env
	}
	start := time.Now()
	err := cmd.Start()
	var hwm int64
	if err == nil {
		stopPoll := pollHWM(cmd.Process.Pid, &hwm)
		err = cmd.Wait()
		stopPoll()
	}
	wall := time.Since(start)
	var s sample
	s.Wall = wall
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			s.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			s.MaxRSSKB = ru.Maxrss // KiB on Linux
		}
	}
	// Linux charges a child's ru_maxrss with its parent's high-water mark at
	// exec (vfork shares the mm), so a small child of a big driver looks big.
	// VmHWM of the exec'd image is exact; it is sampled, so it can only miss
	// growth in the last poll interval. Shell pipelines keep rusage (their
	// children are not polled).
	if hwm > 0 && argv[0] != "bash" {
		s.MaxRSSKB = hwm
	}
	if err != nil {
		return s, out.Bytes(), fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, tail(errb.String(), 2000))
	}
	return s, out.Bytes(), nil
}

// pollHWM samples VmHWM (KiB) of pid into *hwm until the returned stop is
// called. The first samples may still see the pre-exec image; VmHWM is reset
// by exec, so only samples after exec count, and those only grow.
func pollHWM(pid int, hwm *int64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	path := fmt.Sprintf("/proc/%d/status", pid)
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v := readHWM(path); v > *hwm {
				*hwm = v
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

func readHWM(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// stats summarizes the samples of one case.
type stats struct {
	Median, Min, Max time.Duration
}

func durationStats(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return stats{Median: median(s), Min: s[0], Max: s[len(s)-1]}
}

// median of sorted values; the mean of the middle two for an even count.
func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func medianInt(vs []int64) int64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
