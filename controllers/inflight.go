package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// inflight tracks running builds by ImageBuild UID so that a delete or a
// spec change can cancel one. The zero value is ready to use.
type inflight struct {
	mu      sync.Mutex
	cancels map[types.UID]context.CancelFunc
}

// start derives the build's context; done must be called when it ends.
func (f *inflight) start(ctx context.Context, uid types.UID) (context.Context, func()) {
	bctx, cancel := context.WithCancel(ctx)
	f.mu.Lock()
	if f.cancels == nil {
		f.cancels = map[types.UID]context.CancelFunc{}
	}
	f.cancels[uid] = cancel
	f.mu.Unlock()
	return bctx, func() {
		f.mu.Lock()
		delete(f.cancels, uid)
		f.mu.Unlock()
		cancel()
	}
}

// cancel stops the build of uid, if one runs. It reports whether it did.
func (f *inflight) cancel(uid types.UID) bool {
	f.mu.Lock()
	cancel, ok := f.cancels[uid]
	f.mu.Unlock()
	if ok {
		cancel()
	}
	return ok
}

// pollTimes remembers when each tag base was last polled without writing it
// to status: a poll that finds nothing new must not cause a status update.
// After a restart status.base.checkedAt (set at build time) stands in.
type pollTimes struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (p *pollTimes) get(key string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.at[key]
}

func (p *pollTimes) set(key string, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.at == nil {
		p.at = map[string]time.Time{}
	}
	p.at[key] = t
}

// forget drops every entry of an ImageBuild that is gone (keys start with
// namespace/name/).
func (p *pollTimes) forget(nsName string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prefix := nsName + "/"
	for k := range p.at {
		if len(k) > len(prefix) && k[:len(prefix)] == prefix {
			delete(p.at, k)
		}
	}
}
