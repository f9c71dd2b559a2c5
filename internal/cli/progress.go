package cli

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/kiln-build/kiln/internal/build"
)

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// progressView redraws one line per layer (bytes in, bytes out) on a
// terminal, at most every 200ms, so progress output never slows a build.
type progressView struct {
	w     io.Writer
	mu    sync.Mutex
	rows  map[string]build.Progress
	order []string
	lines int
	done  chan struct{}
	once  sync.Once
}

func newProgressView(w io.Writer) *progressView {
	p := &progressView{w: w, rows: map[string]build.Progress{}, done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *progressView) reporter(buildName string) func(build.Progress) {
	return func(ev build.Progress) {
		key := buildName + "/" + ev.Layer
		p.mu.Lock()
		defer p.mu.Unlock()
		old, ok := p.rows[key]
		if !ok {
			p.order = append(p.order, key)
		}
		if ev.BytesIn < old.BytesIn {
			ev.BytesIn = old.BytesIn
		}
		p.rows[key] = ev
	}
}

func (p *progressView) loop() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			p.draw()
		}
	}
}

func (p *progressView) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := append([]string(nil), p.order...)
	sort.Strings(keys)
	var b strings.Builder
	if p.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.lines)
	}
	for _, k := range keys {
		r := p.rows[k]
		state := "..."
		if r.Done {
			state = fmt.Sprintf("done, %s out", HumanBytes(r.BytesOut))
		}
		fmt.Fprintf(&b, "\x1b[2K%-40s %10s in  %s\n", k, HumanBytes(r.BytesIn), state)
	}
	p.lines = len(keys)
	_, _ = io.WriteString(p.w, b.String())
}

func (p *progressView) stop() {
	p.once.Do(func() {
		close(p.done)
		p.draw()
	})
}

// HumanBytes formats n in binary units, e.g. "757.7 KiB", "1.6 GiB", for
// progress lines and the demo's tables (test/demo).
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
