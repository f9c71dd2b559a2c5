package egresstest

import (
	"context"
	"net"
	"strings"
	"sync"
)

// DialLog records every address a transport dialled, so that a test can
// assert that a forbidden host was never contacted.
type DialLog struct {
	mu    sync.Mutex
	addrs []string
}

// Dial records addr and connects to it; use it as a transport's DialContext.
func (d *DialLog) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	d.mu.Unlock()
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

// To returns the dials whose address contains host.
func (d *DialLog) To(host string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, a := range d.addrs {
		if strings.Contains(a, host) {
			out = append(out, a)
		}
	}
	return out
}
