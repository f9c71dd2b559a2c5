//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// faultPlan is a seeded schedule of faults. Each request draws one action
// from the proxy's generator in arrival order; the same seed gives the same
// sequence of actions.
type faultPlan struct {
	seed uint64
	// Probabilities per request, checked in this order.
	p500, p503, p429, pReset, pDelay float64
	maxDelay                         time.Duration
	// maxFaults bounds the faults injected in total, and maxInARow the faults
	// in a row for one method+path, so a client that retries as documented
	// always gets through.
	maxFaults, maxInARow int
	// forced are the actions of the first requests, before the random draw
	// takes over, so every kind of fault happens at least once whatever the
	// arrival order; resetFirstUpload resets the first blob upload.
	forced           []string
	resetFirstUpload bool
}

// faultProxy is a reverse proxy in front of the registry that injects faults
// (500/503, 429 with Retry-After, connection resets in the middle of blob
// uploads, delays), can throttle upload bodies, can require credentials nobody
// has (a registry that answers 401), and can go down (refuse connections).
type faultProxy struct {
	addr    string
	backend atomic.Pointer[url.URL]

	mu        sync.Mutex
	srv       *http.Server
	plan      *faultPlan
	rng       *rand.Rand
	faults    int
	inARow    map[string]int
	counts    map[string]int // action -> count
	rejectAll bool           // answer 401 to everything (no credentials work)

	// throttle, when >0, limits blob upload bodies to that many bytes/s.
	throttle atomic.Int64
	// uploaded counts blob upload body bytes forwarded to the registry.
	uploaded atomic.Int64
}

func startProxy(backendAddr string) (*faultProxy, error) {
	p := &faultProxy{inARow: map[string]int{}, counts: map[string]int{}}
	p.setBackend(backendAddr)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.addr = l.Addr().String()
	p.serve(l)
	return p, nil
}

func (p *faultProxy) setBackend(addr string) { p.backend.Store(&url.URL{Scheme: "http", Host: addr}) }

func (p *faultProxy) serve(l net.Listener) {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.backend.Load())
			// The registry builds upload Locations from Host: keep the
			// proxy's, so every follow-up request comes through here too.
			pr.Out.Host = pr.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.count("backend-error")
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	srv := &http.Server{Handler: p.handler(rp), ReadHeaderTimeout: 10 * time.Second}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// down closes the listener and every open connection: clients get
// "connection refused" until up.
func (p *faultProxy) down() error {
	p.mu.Lock()
	srv := p.srv
	p.srv = nil
	p.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

// up listens again on the same address.
func (p *faultProxy) up() error {
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly after Close
		if l, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(l)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("listening again on %s: %w", p.addr, err)
}

func (p *faultProxy) close() error { return p.down() }

func (p *faultProxy) setPlan(plan *faultPlan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.plan = plan
	p.faults = 0
	p.inARow = map[string]int{}
	p.counts = map[string]int{}
	if plan != nil {
		p.rng = rand.New(rand.NewPCG(plan.seed, plan.seed^0x5eed))
	}
}

func (p *faultProxy) setRejectAll(v bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rejectAll = v
}

func (p *faultProxy) count(action string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[action]++
}

// stats returns how often each action was taken since the plan was set.
func (p *faultProxy) stats() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// decide draws the action for one request.
func (p *faultProxy) decide(r *http.Request) (action string, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rejectAll {
		return "401", 0
	}
	if p.plan == nil {
		return "pass", 0
	}
	key := r.Method + " " + r.URL.Path
	x := p.rng.Float64()
	d := time.Duration(p.rng.Int64N(int64(p.plan.maxDelay) + 1))
	action = "pass"
	switch {
	case p.plan.resetFirstUpload && isUpload(r) && p.counts["reset"] == 0:
		action = "reset"
	case len(p.plan.forced) > 0:
		action, p.plan.forced = p.plan.forced[0], p.plan.forced[1:]
	case p.faults < p.plan.maxFaults && p.inARow[key] < p.plan.maxInARow:
		pl := p.plan
		switch {
		case x < pl.p500:
			action = "500"
		case x < pl.p500+pl.p503:
			action = "503"
		case x < pl.p500+pl.p503+pl.p429:
			action = "429"
		case x < pl.p500+pl.p503+pl.p429+pl.pReset && isUpload(r):
			action = "reset"
		case x < pl.p500+pl.p503+pl.p429+pl.pReset+pl.pDelay:
			action = "delay"
		}
	}
	switch action {
	case "pass", "delay":
		p.inARow[key] = 0
	default:
		p.faults++
		p.inARow[key]++
	}
	p.counts[action]++
	return action, d
}

// isUpload says whether r carries blob bytes (PATCH, or PUT with a body).
func isUpload(r *http.Request) bool {
	return strings.Contains(r.URL.Path, "/blobs/uploads/") &&
		(r.Method == http.MethodPatch || r.Method == http.MethodPut) && r.ContentLength != 0
}

func (p *faultProxy) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		action, delay := p.decide(r)
		switch action {
		case "401":
			w.Header().Set("WWW-Authenticate", `Basic realm="kiln-e2e"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		case "500", "503":
			code := http.StatusInternalServerError
			if action == "503" {
				code = http.StatusServiceUnavailable
			}
			w.WriteHeader(code)
			_, _ = io.WriteString(w, "injected fault\n")
			return
		case "429":
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"injected"}]}`)
			return
		case "reset":
			resetMidBody(w, r)
			return
		case "delay":
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if isUpload(r) {
			r.Body = &uploadBody{r: r.Body, p: p, ctx: r.Context()}
		}
		next.ServeHTTP(w, r)
	})
}

// resetMidBody reads part of the upload, then drops the connection with a
// TCP RST: the client sees "connection reset by peer" mid-stream.
func resetMidBody(w http.ResponseWriter, r *http.Request) {
	_, _ = io.CopyN(io.Discard, r.Body, 32<<10)
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// uploadBody counts and optionally throttles blob bytes on their way to
// the registry.
type uploadBody struct {
	r   io.ReadCloser
	p   *faultProxy
	ctx context.Context
}

func (b *uploadBody) Read(buf []byte) (int, error) {
	if rate := b.p.throttle.Load(); rate > 0 {
		if len(buf) > 64<<10 {
			buf = buf[:64<<10]
		}
		n, err := b.r.Read(buf)
		b.p.uploaded.Add(int64(n))
		wait := time.Duration(float64(n) / float64(rate) * float64(time.Second))
		select {
		case <-time.After(wait):
		case <-b.ctx.Done():
			return n, errors.Join(err, b.ctx.Err())
		}
		return n, err
	}
	n, err := b.r.Read(buf)
	b.p.uploaded.Add(int64(n))
	return n, err
}

func (b *uploadBody) Close() error { return b.r.Close() }
