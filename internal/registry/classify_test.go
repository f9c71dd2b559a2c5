package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kiln-build/kiln/internal/egress"
	"github.com/kiln-build/kiln/internal/failure"
)

func terr(status int, codes ...transport.ErrorCode) error {
	e := &transport.Error{StatusCode: status}
	for _, c := range codes {
		e.Errors = append(e.Errors, transport.Diagnostic{Code: c, Message: "m"})
	}
	return e
}

var forbiddenErr = &egress.ForbiddenError{Host: "metadata", Reason: "is a cloud metadata endpoint", Via: "token realm http://metadata/t named by r"}

func refused(*http.Request) (*http.Response, error) {
	return nil, &url.Error{Op: "Get", URL: "http://r/", Err: forbiddenErr}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err       error
		access    Access
		what      string
		reason    failure.Reason
		permanent bool
		fragment  string
	}{
		{terr(401), AccessBase, "base r/a:1", failure.Unauthorized, true, "base r/a:1: unexpected status code 401 Unauthorized: not allowed to pull from this registry; check the pull secrets of serviceAccountName"},
		{terr(403, transport.DeniedErrorCode), AccessTarget, "target r/a:1", failure.Unauthorized, true, "not allowed to push to this registry"},
		{terr(404, transport.ManifestUnknownErrorCode), AccessBase, "base r/a:1", failure.BaseNotFound, true, "base r/a:1: not found"},
		{terr(404, transport.NameUnknownErrorCode), AccessSource, "layer app blob r/a@sha256:x", failure.SourceNotFound, true, "layer app blob r/a@sha256:x: not found"},
		{terr(404, transport.NameUnknownErrorCode), AccessTarget, "target r/a:1", failure.PushRejected, true, "repository not found"},
		{terr(400, transport.ManifestInvalidErrorCode), AccessTarget, "target r/a:1", failure.PushRejected, true, "the registry rejected the push: MANIFEST_INVALID"},
		{terr(400, transport.BlobUnknownErrorCode), AccessTarget, "target r/a:1", failure.PushRejected, true, "BLOB_UNKNOWN"},
		{terr(400, transport.DigestInvalidErrorCode), AccessTarget, "target r/a:1", failure.PushRejected, true, "DIGEST_INVALID"},
		{terr(503), AccessTarget, "target r/a:1", failure.Transient, false, "503"},
		{terr(429, transport.TooManyRequestsErrorCode), AccessBase, "base r", failure.Transient, false, "TOOMANYREQUESTS"},
		{terr(408), AccessBase, "base r", failure.Transient, false, "408"},
		{&url.Error{Op: "Put", URL: "https://r", Err: syscall.ECONNRESET}, AccessTarget, "target r", failure.Transient, false, "connection reset"},
		{io.ErrUnexpectedEOF, AccessTarget, "target r", failure.Transient, false, "unexpected EOF"},
		{&url.Error{Op: "Get", URL: "https://r", Err: x509.UnknownAuthorityError{}}, AccessTarget, "target r", failure.InvalidSpec, true, "give its CA bundle"},
		{&retryAfterError{method: "PUT", url: "u", status: 429, after: time.Minute * 5, attempts: 6}, AccessTarget, "target r", failure.Transient, false, "retry after 5m0s"},
		{failure.Permanentf(failure.DigestMismatch, "x"), AccessTarget, "target r", failure.DigestMismatch, true, "target r: x"},
		// A refusal deep inside the transport's wrappers, its URL's query
		// not repeated.
		{fmt.Errorf("fetching token: %w", &url.Error{Op: "Get", URL: "http://metadata/t?scope=x", Err: forbiddenErr}), AccessBase, "base r/a:1",
			failure.SourceForbidden, true, `base r/a:1: refusing to connect: token realm http://metadata/t named by r: host "metadata" is a cloud metadata endpoint`},
		{&exhaustedError{err: forbiddenErr, attempts: 1}, AccessTarget, "target r", failure.SourceForbidden, true, `host "metadata"`},
		// The access, not the wording of what, decides.
		{terr(404, transport.NameUnknownErrorCode), AccessSource, "base-layer blob r/a@sha256:x", failure.SourceNotFound, true, "not found"},
		{terr(404, transport.NameUnknownErrorCode), AccessBase, "layer r/a:1", failure.BaseNotFound, true, "check the base reference"},
		{terr(400), AccessTarget, "pushing r/a:1", failure.PushRejected, true, "the registry rejected the push"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			got := Classify(tt.err, tt.access, tt.what)
			if strings.Contains(got.Error(), "scope=") {
				t.Fatalf("message repeats a query: %v", got)
			}
			if failure.ReasonOf(got) != tt.reason || failure.IsPermanent(got) != tt.permanent || !strings.Contains(got.Error(), tt.fragment) {
				t.Fatalf("Classify(%v) = %v [%s permanent=%v], want %s permanent=%v containing %q",
					tt.err, got, failure.ReasonOf(got), failure.IsPermanent(got), tt.reason, tt.permanent, tt.fragment)
			}
			if !strings.HasPrefix(got.Error(), tt.what) {
				t.Fatalf("message %q does not start with %q", got, tt.what)
			}
		})
	}
	if Classify(nil, AccessSource, "x") != nil {
		t.Fatal("nil must stay nil")
	}
	if err := Classify(context.Canceled, AccessSource, "x"); !errors.Is(err, context.Canceled) || failure.IsPermanent(err) {
		t.Fatalf("cancellation: %v", err)
	}
}

// A registry's redirect to blob storage is a pre-signed URL: neither its
// query nor any userinfo may reach the message, whatever wraps the error.
func TestClassifyRedactsURLs(t *testing.T) {
	const u = "https://user:pa55@blobs.example/x?X-Amz-Signature=SECRET"
	tests := []error{
		&url.Error{Op: "Get", URL: u, Err: syscall.ECONNRESET},
		&exhaustedError{err: &url.Error{Op: "Get", URL: u, Err: io.ErrUnexpectedEOF}, attempts: 3},
		fmt.Errorf("fetching: %w", &url.Error{Op: "Get", URL: u, Err: x509.UnknownAuthorityError{}}),
	}
	for i, err := range tests {
		got := Classify(err, AccessBase, "base r/a:1").Error()
		if strings.Contains(got, "SECRET") || strings.Contains(got, "pa55") || !strings.Contains(got, "https://blobs.example/x") {
			t.Errorf("%d: %s", i, got)
		}
	}
}

// scripted answers requests from a list of outcomes and records them.
type scripted struct {
	outcomes []func(*http.Request) (*http.Response, error)
	bodies   []string
}

func (s *scripted) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		s.bodies = append(s.bodies, string(b))
	} else {
		s.bodies = append(s.bodies, "")
	}
	f := s.outcomes[0]
	if len(s.outcomes) > 1 {
		s.outcomes = s.outcomes[1:]
	}
	return f(r)
}

func status(code int) func(*http.Request) (*http.Response, error) {
	return func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: code, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	}
}

func connReset(*http.Request) (*http.Response, error) { return nil, syscall.ECONNRESET }

func TestRetryTransport(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		getBody  bool
		outcomes []func(*http.Request) (*http.Response, error)
		attempts int
		status   int
		errFrag  string
	}{
		{"503 then ok, replayed body", "PUT", "/v2/r/manifests/1", "m", true, []func(*http.Request) (*http.Response, error){status(503), status(201)}, 2, 201, ""},
		{"reset on GET is retried", "GET", "/v2/r/blobs/sha256:x", "", false, []func(*http.Request) (*http.Response, error){connReset, status(200)}, 2, 200, ""},
		{"reset mid PATCH left to the whole-upload retry", "PATCH", "/v2/r/blobs/uploads/u", "chunk", true, []func(*http.Request) (*http.Response, error){connReset}, 1, 0, "connection reset"},
		{"body without GetBody is not replayed", "PUT", "/v2/r/manifests/1", "m", false, []func(*http.Request) (*http.Response, error){status(503)}, 1, 503, ""},
		{"404 is not retried", "GET", "/v2/r/manifests/1", "", false, []func(*http.Request) (*http.Response, error){status(404)}, 1, 404, ""},
		{"gives up after retries", "GET", "/v2/", "", false, []func(*http.Request) (*http.Response, error){connReset}, 1 + defaultRetries, 0, "after 6 attempts"},
		{"a policy refusal is not retried", "GET", "/v2/", "", false, []func(*http.Request) (*http.Response, error){refused}, 1, 0, "cloud metadata endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scripted{outcomes: tt.outcomes}
			rt := newRetryTransport(s, Options{Sleep: (&sleeps{}).sleep}, nil)
			var body io.Reader
			if tt.body != "" {
				body = io.NopCloser(strings.NewReader(tt.body)) // hides the type: no GetBody
			}
			req, _ := http.NewRequest(tt.method, "http://r"+tt.path, body)
			if tt.getBody {
				req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(tt.body)), nil }
			}
			resp, err := rt.RoundTrip(req)
			if len(s.bodies) != tt.attempts {
				t.Fatalf("%d attempts, want %d", len(s.bodies), tt.attempts)
			}
			for i, b := range s.bodies {
				if b != tt.body {
					t.Errorf("attempt %d sent body %q, want %q", i, b, tt.body)
				}
			}
			if tt.errFrag != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errFrag) {
					t.Fatalf("err = %v, want %q", err, tt.errFrag)
				}
				return
			}
			if err != nil || resp.StatusCode != tt.status {
				t.Fatalf("resp %v err %v, want %d", resp, err, tt.status)
			}
		})
	}
}

func TestRetryWholePredicate(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&url.Error{Op: "Patch", URL: "u", Err: syscall.ECONNRESET}, true},
		{io.ErrUnexpectedEOF, true},
		{&exhaustedError{err: syscall.ECONNRESET, attempts: 6}, false},
		{terr(503), false},
		{terr(416), true},
		{terr(404, transport.BlobUploadUnknownErrorCode), true},
		{terr(401), false},
		{context.Canceled, false},
		{&url.Error{Op: "Get", URL: "u", Err: x509.UnknownAuthorityError{}}, false},
		{&url.Error{Op: "Get", URL: "u", Err: forbiddenErr}, false},
	}
	for _, tt := range tests {
		if got := retryWhole(tt.err); got != tt.want {
			t.Errorf("retryWhole(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestCABundle(t *testing.T) {
	rt := Transport(Options{CABundle: []byte("not pem")})
	req, _ := http.NewRequest("GET", "https://r/v2/", nil)
	_, err := rt.RoundTrip(req)
	if failure.ReasonOf(err) != failure.InvalidSpec || !strings.Contains(err.Error(), "CA bundle contains no PEM certificate") {
		t.Fatalf("err = %v", err)
	}
	if _, ok := baseTransport(Options{}, egress.RegistryPolicy(nil)).(*http.Transport); !ok {
		t.Fatal("default base transport")
	}
}

func TestParseReference(t *testing.T) {
	ref, err := ParseReference("registry.example/team/app:1.0", Options{Insecure: true})
	if err != nil || ref.Context().Registry.Scheme() != "http" {
		t.Fatalf("insecure: %v %v", ref, err)
	}
	_, err = ParseReference("registry.example/Team/app", Options{})
	if failure.ReasonOf(err) != failure.InvalidSpec || !strings.Contains(err.Error(), `image reference "registry.example/Team/app" is invalid`) {
		t.Fatalf("err = %v", err)
	}
}
