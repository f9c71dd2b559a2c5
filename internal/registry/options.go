// Package registry talks to OCI registries for kiln: options (auth, TLS,
// host policy, retries), the one transport every registry connection uses
// (Transport), push with skip-unchanged and tag moves, and classification of
// registry errors into failure reasons.
package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/retry"
)

// Options configures registry access.
type Options struct {
	Keychain authn.Keychain // default authn.DefaultKeychain (docker config, DOCKER_CONFIG)
	Insecure bool           // plain http (name.Insecure)
	CABundle []byte         // extra PEM roots
	// Transport is the base transport (tests inject a faulty one), wrapped
	// with the host policy and retries. Default: remote.DefaultTransport's
	// settings with a dialer that refuses forbidden addresses after DNS
	// resolution; an injected transport keeps its own dialing, so only
	// request URLs, token realms and redirects are vetted for it.
	Transport http.RoundTripper
	// Policy decides which hosts may be contacted (egress.RegistryPolicy);
	// nil is egress.RegistryPolicy(nil): link-local addresses and cloud
	// metadata endpoints refused. It applies to every request: the
	// registry's own, its token realm and redirects to blob storage.
	Policy *egress.Policy
	// Retries is the most retries of one request (default 5); a push's
	// requests also share a budget of Retries per blob and manifest it
	// writes, plus Retries (pushBudget). Backoff is exponential with jitter
	// from 500ms, cap 20s; a Retry-After is honoured up to retry.MaxAfter.
	Retries   int
	Jobs      int                                              // concurrent blob uploads, default 4
	Sleep     func(ctx context.Context, d time.Duration) error // injectable; default waits on a timer or ctx
	UserAgent string
	// MountFrom names, per blob digest, a repository ("host/path") known to
	// hold that blob already. Push mounts such blobs when the repository is
	// on the target's registry instead of uploading them again.
	MountFrom map[v1.Hash]string
	// Force makes Push write the manifest under the target even when the
	// target already resolves to the image's digest (one manifest PUT), to
	// repair a registry: blobs it lost are uploaded again, blobs it holds
	// are not, and extra tags that point at the digest are left alone.
	Force bool
}

const (
	defaultRetries = 5
	defaultJobs    = 4
	backoffBase    = 500 * time.Millisecond
	backoffCap     = 20 * time.Second
)

func (o Options) retries() int {
	if o.Retries > 0 {
		return o.Retries
	}
	return defaultRetries
}

func (o Options) jobs() int {
	if o.Jobs > 0 {
		return o.Jobs
	}
	return defaultJobs
}

func (o Options) keychain() authn.Keychain {
	if o.Keychain != nil {
		return o.Keychain
	}
	return authn.DefaultKeychain
}

// retryPolicy is how retryTransport retries one request.
func (o Options) retryPolicy() retry.Policy {
	return retry.Policy{Retries: o.retries(), Base: backoffBase, Cap: backoffCap, Sleep: o.Sleep}
}

// uploadBackoff is go-containerregistry's own retry of a whole blob upload
// (a fresh POST + PATCH + PUT), which it runs when an upload fails midway,
// e.g. a connection reset during the PATCH. Single requests are retried below
// it by retryTransport, so this only covers what a request retry cannot. At
// most Steps-1 restarts per upload, each one taken from the push's retry
// budget (budgeted), like the request retries below it.
var uploadBackoff = remote.Backoff{Duration: backoffBase, Factor: 2, Jitter: 0.5, Steps: 4, Cap: backoffCap}

// RemoteOptions returns go-containerregistry remote options: auth via the
// keychain, the base transport with the TLS config and the retry wrapper,
// the context and the number of parallel uploads. Upload restarts draw from
// the retry budget ctx carries (retry.WithBudget), if any.
func RemoteOptions(ctx context.Context, o Options) []remote.Option {
	return remoteOptions(ctx, o, nil)
}

func remoteOptions(ctx context.Context, o Options, st *stats) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(o.keychain()),
		remote.WithTransport(newRetryTransport(Transport(o), o, st)),
		remote.WithJobs(o.jobs()),
		remote.WithRetryBackoff(uploadBackoff),
		remote.WithRetryPredicate(budgeted(retry.BudgetOf(ctx))),
		// Status codes are retried per request by retryTransport; letting
		// go-containerregistry retry them too would multiply the attempts.
		remote.WithRetryStatusCodes(),
	}
	if o.UserAgent != "" {
		opts = append(opts, remote.WithUserAgent(o.UserAgent))
	}
	return opts
}

// Transport is the transport every registry connection of kiln is made
// with, without retries (RemoteOptions adds them; blob sources retry on
// their own): o.Transport or the default one, with the CA bundle added to
// the system roots, every request vetted by the host policy. A refusal is an
// *egress.ForbiddenError, which Classify makes a permanent SourceForbidden.
func Transport(o Options) http.RoundTripper {
	p := o.policy()
	return p.RoundTripper(withCABundle(baseTransport(o, p), o.CABundle))
}

func (o Options) policy() egress.Policy {
	if o.Policy != nil {
		return *o.Policy
	}
	return egress.RegistryPolicy(nil)
}

// baseTransport is o.Transport, else the shared default transport of p.
func baseTransport(o Options, p egress.Policy) http.RoundTripper {
	if o.Transport != nil {
		return o.Transport
	}
	return defaultTransport(p)
}

// defaultTransports holds one default transport per policy, so that builds
// share connections as they would with remote.DefaultTransport.
var defaultTransports sync.Map // egress.Policy.String() -> *http.Transport

// defaultTransport has remote.DefaultTransport's settings and p's dial-time
// check. Behind an HTTP proxy (HTTPS_PROXY) the address checked is the
// proxy's; request URLs are still vetted by the RoundTripper.
func defaultTransport(p egress.Policy) *http.Transport {
	key := p.String()
	if !p.HasResolver() {
		if t, ok := defaultTransports.Load(key); ok {
			return t.(*http.Transport)
		}
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           p.DialContext(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}),
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   50,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if p.HasResolver() {
		return t // a resolver of its own (tests): not shared
	}
	actual, _ := defaultTransports.LoadOrStore(key, t)
	return actual.(*http.Transport)
}

// withCABundle returns base with ca added to the system roots; base itself
// when ca is empty or base is not an *http.Transport (an injected transport
// owns its TLS config).
func withCABundle(base http.RoundTripper, ca []byte) http.RoundTripper {
	if len(ca) == 0 {
		return base
	}
	ht, ok := base.(*http.Transport)
	if !ok {
		return base
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(ca) {
		return failingTransport{failure.Permanentf(failure.InvalidSpec,
			"the registry CA bundle contains no PEM certificate")}
	}
	ht = ht.Clone()
	if ht.TLSClientConfig == nil {
		ht.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	ht.TLSClientConfig.RootCAs = pool
	return ht
}

// failingTransport reports a configuration error on every request, because
// RemoteOptions has no error result.
type failingTransport struct{ err error }

func (f failingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return nil, f.err
}

// ParseReference parses s (with name.Insecure when o.Insecure). Errors are
// permanent InvalidSpec failures naming the reference.
func ParseReference(s string, o Options) (name.Reference, error) {
	ref, err := name.ParseReference(s, nameOptions(o)...)
	if err != nil {
		return nil, failure.Permanentf(failure.InvalidSpec, "image reference %q is invalid: %v", s, err)
	}
	return ref, nil
}

func nameOptions(o Options) []name.Option {
	if o.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}
