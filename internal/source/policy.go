package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// Cloud metadata endpoints hand out credentials to anything on the node that
// asks; a layer URL (user input) must not be able to reach them. Most are on
// link-local addresses, which are refused by range; these are the names and
// the few addresses outside that range.
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

// errForbidden marks a policy refusal so it can be found inside the
// url.Error / net.OpError wrappers that net/http adds.
type errForbidden struct{ msg string }

func (e *errForbidden) Error() string { return e.msg }

// errTooManyRedirects is returned from CheckRedirect.
var errTooManyRedirects = fmt.Errorf("stopped after %d redirects", maxRedirects)

// hostPolicy decides which hosts URL sources may reach.
type hostPolicy struct {
	allowed map[string]bool // normalized host or host:port entries
	// exclusive makes allowed the only hosts permitted (URL sources). When
	// false (registry pulls) allowed only exempts hosts from the default
	// refusals.
	exclusive bool
}

func newHostPolicy(allowed []string, exclusive bool) hostPolicy {
	p := hostPolicy{allowed: map[string]bool{}, exclusive: exclusive && len(allowed) > 0}
	for _, h := range allowed {
		if h = normalizeHost(h); h != "" {
			p.allowed[h] = true
		}
	}
	return p
}

func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimPrefix(strings.TrimSuffix(h, "]"), "[") // bare [v6]
	return strings.TrimSuffix(h, ".")
}

// listed reports whether u's host (with or without port) is allowed explicitly.
func (p hostPolicy) listed(host, hostport string) bool {
	return p.allowed[normalizeHost(host)] || p.allowed[strings.ToLower(hostport)]
}

// checkURL vets a URL before any connection is made (also each redirect).
func (p hostPolicy) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return &errForbidden{fmt.Sprintf("scheme %q is not allowed (http or https)", u.Scheme)}
	}
	host := u.Hostname()
	if host == "" {
		return &errForbidden{"URL has no host"}
	}
	if p.listed(host, u.Host) {
		return nil
	}
	if p.exclusive {
		return &errForbidden{fmt.Sprintf("host %q is not in the allowed hosts", host)}
	}
	if metadataNames[normalizeHost(host)] {
		return &errForbidden{fmt.Sprintf("host %q is a cloud metadata endpoint", host)}
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		return p.checkAddr(host, addr)
	}
	return nil
}

// checkAddr vets an address a host name resolved to (or an IP literal), so
// that a name pointing at a metadata address is refused as well.
func (p hostPolicy) checkAddr(host string, addr netip.Addr) error {
	if p.listed(host, host) || p.allowed[addr.Unmap().String()] {
		return nil
	}
	a := addr.Unmap()
	if a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || metadataAddrs[a] {
		return &errForbidden{fmt.Sprintf("host %q resolves to link-local or metadata address %s", host, a)}
	}
	return nil
}

// dialContext resolves and connects like net.Dialer but refuses forbidden
// addresses after resolution, when it is too late for DNS to change them.
func (p hostPolicy) dialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		dd := *d
		dd.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			return p.checkAddr(host, ap.Addr())
		}
		return dd.DialContext(ctx, network, addr)
	}
}

func isForbidden(err error) (string, bool) {
	var fe *errForbidden
	if errors.As(err, &fe) {
		return fe.msg, true
	}
	return "", false
}
