package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"syscall"
)

// Cloud metadata endpoints hand out credentials to anything on the node that
// asks; a tenant's reference (a layer URL, a base or target image, a realm
// its registry names) must not be able to reach them. Most are on link-local
// addresses, which are refused by range; these are the names and the few
// addresses outside that range.
var (
	metadataNames = map[string]bool{
		"metadata":                   true,
		"metadata.google.internal":   true,
		"metadata.goog":              true,
		"instance-data":              true,
		"instance-data.ec2.internal": true,
	}
	metadataAddrs = map[netip.Addr]bool{
		netip.MustParseAddr("fd00:ec2::254"):   true, // AWS IMDS over IPv6
		netip.MustParseAddr("100.100.100.200"): true, // Alibaba Cloud
	}
)

// ForbiddenError is a refusal by a Policy. It is returned (wrapped by
// net/http and go-containerregistry) before any byte is sent to the host, so
// callers classify it with errors.As and report it as permanent: the same
// reference is refused the same way on every attempt.
type ForbiddenError struct {
	// Host is the refused host name or address; "" when the URL has none.
	Host string
	// Reason says why, e.g. "is a cloud metadata endpoint".
	Reason string
	// Via says how kiln came to contact the host when the tenant did not
	// name it directly, e.g. a token realm or a redirect; "" otherwise.
	Via string
}

func (e *ForbiddenError) Error() string {
	msg := e.Reason
	if e.Host != "" {
		msg = fmt.Sprintf("host %q %s", e.Host, e.Reason)
	}
	if e.Via != "" {
		msg = e.Via + ": " + msg
	}
	return msg
}

// AsForbidden finds a policy refusal inside err's wrappers.
func AsForbidden(err error) (*ForbiddenError, bool) {
	var fe *ForbiddenError
	ok := errors.As(err, &fe)
	return fe, ok
}

// Policy decides which hosts kiln may contact on a tenant's behalf. The zero
// Policy refuses link-local addresses (169.254.0.0/16, fe80::/10) and the
// cloud metadata names and addresses, and allows everything else. A Policy
// is immutable and safe for concurrent use.
type Policy struct {
	allowed map[string]bool // normalized host or host:port entries
	// exclusive makes allowed the only hosts permitted. Otherwise allowed
	// only exempts hosts from the default refusals.
	exclusive bool
	resolver  *net.Resolver
}

// SourcePolicy is the policy of URL sources: when allowed is non-empty it is
// the only hosts they may use (host names or IP literals, matched
// case-insensitively, with or without port); when empty, the default
// refusals apply.
func SourcePolicy(allowed []string) Policy {
	return newPolicy(allowed, len(allowed) > 0)
}

// RegistryPolicy is the policy of every registry connection (base pulls,
// target pushes and HEADs, blob sources, token realms, redirects to blob
// storage). allowed only exempts hosts from the default refusals: the list
// that confines URL sources must not cut kiln off from the registries a
// build names, whose credentials come from their own pull secrets.
func RegistryPolicy(allowed []string) Policy {
	return newPolicy(allowed, false)
}

func newPolicy(allowed []string, exclusive bool) Policy {
	p := Policy{allowed: map[string]bool{}, exclusive: exclusive}
	for _, h := range allowed {
		if h = normalizeHost(h); h != "" {
			p.allowed[h] = true
		}
	}
	return p
}

// WithResolver returns p resolving names with r at dial time instead of
// net.DefaultResolver (a cluster's own DNS; tests use a fake one).
func (p Policy) WithResolver(r *net.Resolver) Policy {
	p.resolver = r
	return p
}

// String describes p for logs; equal policies have equal strings.
func (p Policy) String() string {
	hosts := make([]string, 0, len(p.allowed))
	for h := range p.allowed {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	mode := "exempt"
	if p.exclusive {
		mode = "only"
	}
	return fmt.Sprintf("egress policy (%s: %s)", mode, strings.Join(hosts, ","))
}

// HasResolver reports whether p resolves names with its own resolver.
func (p Policy) HasResolver() bool { return p.resolver != nil }

// normalizeHost lower-cases h and drops a trailing dot and the brackets of
// a bare [v6] literal; a host:port keeps its port (and its brackets, as
// url.URL.Host has them).
func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if host, port, err := net.SplitHostPort(h); err == nil && port != "" {
		return net.JoinHostPort(strings.TrimSuffix(host, "."), port)
	}
	h = strings.TrimPrefix(strings.TrimSuffix(h, "]"), "[")
	return strings.TrimSuffix(h, ".")
}

// listed reports whether host (with or without port) is allowed explicitly.
func (p Policy) listed(host, hostport string) bool {
	return p.allowed[normalizeHost(host)] || p.allowed[normalizeHost(hostport)]
}

// CheckURL vets a URL before any connection is made to it (also each
// redirect and token realm).
func (p Policy) CheckURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return &ForbiddenError{Reason: fmt.Sprintf("scheme %q is not allowed (http or https)", u.Scheme)}
	}
	host := u.Hostname()
	if host == "" {
		return &ForbiddenError{Reason: "URL has no host"}
	}
	if p.listed(host, u.Host) {
		return nil
	}
	if p.exclusive {
		return &ForbiddenError{Host: host, Reason: "is not in the allowed hosts"}
	}
	if metadataNames[normalizeHost(host)] {
		return &ForbiddenError{Host: host, Reason: "is a cloud metadata endpoint"}
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		return p.CheckAddr(host, addr)
	}
	return nil
}

// CheckAddr vets an address host resolved to (or an IP literal), so that a
// name pointing at a metadata address is refused as well.
func (p Policy) CheckAddr(host string, addr netip.Addr) error {
	a := addr.Unmap().WithZone("")
	if p.listed(host, host) || p.allowed[a.String()] {
		return nil
	}
	if a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || metadataAddrs[a] {
		return &ForbiddenError{Host: host, Reason: "resolves to link-local or metadata address " + a.String()}
	}
	return nil
}

// DialContext dials like d but refuses forbidden addresses after name
// resolution, from the socket's Control hook: the address checked is the one
// connected to, so DNS cannot swap it in between.
func (p Policy) DialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dialing %s: %w", addr, err)
		}
		dd := *d
		if p.resolver != nil {
			dd.Resolver = p.resolver
		}
		dd.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("dialing %s: %w", address, err)
			}
			return p.CheckAddr(host, ap.Addr())
		}
		return dd.DialContext(ctx, network, addr)
	}
}

// CheckRedirect vets each redirect target and stops after max redirects with
// tooMany; next, when set, runs afterwards (a caller's own policy).
func (p Policy) CheckRedirect(max int, tooMany error, next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) > max {
			return tooMany
		}
		if err := p.CheckURL(req.URL); err != nil {
			return viaRedirect(err, via)
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
}

func viaRedirect(err error, via []*http.Request) error {
	var fe *ForbiddenError
	if len(via) > 0 && errors.As(err, &fe) && fe.Via == "" {
		fe.Via = "redirect from " + RedactURL(via[len(via)-1].URL.String())
	}
	return err
}

// RoundTripper returns inner with every request vetted by p before it is
// sent, and with every URL a response hands back vetted before the caller
// can follow it: the token realms of a 401 (a hostile registry could
// otherwise send kiln, with credentials, to a metadata endpoint) and the
// Location of a redirect or of a blob upload session. A refused response is
// drained and replaced by a *ForbiddenError, so that callers see the typed
// refusal rather than their own, untyped checks (go-containerregistry has
// some). Redirects http.Client follows pass through here too. inner keeps
// its own dialing: only DialContext checks the addresses names resolve to.
func (p Policy) RoundTripper(inner http.RoundTripper) http.RoundTripper {
	return &policyTransport{policy: p, inner: inner}
}

type policyTransport struct {
	policy Policy
	inner  http.RoundTripper
}

func (t *policyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.policy.CheckURL(req.URL); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		if req.Response != nil && req.Response.Request != nil {
			err = viaRedirect(err, []*http.Request{req.Response.Request})
		}
		return nil, err
	}
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if err := t.policy.checkResponse(req.URL, resp); err != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// checkResponse vets the URLs a response to a request for from names.
func (p Policy) checkResponse(from *url.URL, resp *http.Response) error {
	if resp.StatusCode == http.StatusUnauthorized {
		if err := p.checkRealms(from, resp.Header); err != nil {
			return err
		}
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := from.Parse(loc)
	if err != nil {
		return nil // unusable: following it fails on its own
	}
	if err := p.CheckURL(u); err != nil {
		var fe *ForbiddenError
		if errors.As(err, &fe) {
			fe.Via = "location " + RedactURL(u.String()) + " named by " + RedactURL(from.String())
			if resp.StatusCode >= 300 && resp.StatusCode < 400 {
				fe.Via = "redirect from " + RedactURL(from.String())
			}
		}
		return err
	}
	return nil
}

// checkRealms vets every realm a challenge names.
func (p Policy) checkRealms(from *url.URL, h http.Header) error {
	for _, v := range h.Values("Www-Authenticate") {
		for _, realm := range realms(v) {
			u, err := url.Parse(realm)
			if err != nil || u.Host == "" {
				// Not a URL kiln could be sent to: a Basic challenge's realm
				// is free text ("Registry Realm"), and a Bearer realm that
				// does not parse fails the token exchange on its own.
				continue
			}
			if err := p.CheckURL(u); err != nil {
				var fe *ForbiddenError
				if errors.As(err, &fe) {
					fe.Via = fmt.Sprintf("token realm %s named by %s", RedactURL(realm), from.Host)
				}
				return err
			}
		}
	}
	return nil
}

// realms returns every value of a realm parameter in a WWW-Authenticate
// header value. It deliberately finds more than a challenge parser would
// (any "realm" followed by "=", anywhere, an unquoted value up to a comma or
// space): whichever realm go-containerregistry's parser picks is among them,
// so no parser differential lets one through.
func realms(v string) []string {
	var out []string
	lower := asciiLower(v) // same length as v, unlike strings.ToLower
	for i := 0; ; {
		j := strings.Index(lower[i:], "realm")
		if j < 0 {
			return out
		}
		i += j + len("realm")
		rest := strings.TrimLeft(v[i:], " \t")
		if !strings.HasPrefix(rest, "=") {
			continue
		}
		rest = strings.TrimLeft(rest[1:], " \t")
		if val, ok := paramValue(rest); ok {
			out = append(out, val)
		}
	}
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// paramValue reads a quoted string (with backslash escapes) or a bare value
// up to a comma or space from the start of s.
func paramValue(s string) (string, bool) {
	if !strings.HasPrefix(s, `"`) {
		end := strings.IndexAny(s, ", \t")
		if end < 0 {
			end = len(s)
		}
		return s[:end], end > 0
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == '"':
			return b.String(), true
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}
