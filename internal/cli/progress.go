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

	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/units"
)

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// progressView redraws one line per layer (bytes in, bytes out) on a
// terminal, at most every 200ms, so progress output never slows a build.
type progressView struct {
	w     io.Writer
	mu    sync.Mutex
	rows  map[string]engine.Progress
	order []string
	lines int
	done  chan struct{}
	once  sync.Once
}

func newProgressView(w io.Writer) *progressView {
	p := &progressView{w: w, rows: map[string]engine.Progress{}, done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *progressView) reporter(buildName string) func(engine.Progress) {
	return func(ev engine.Progress) {
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
			state = fmt.Sprintf("done, %s out", units.Bytes(r.BytesOut))
		}
		fmt.Fprintf(&b, "\x1b[2K%-40s %10s in  %s\n", k, units.Bytes(r.BytesIn), state)
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
