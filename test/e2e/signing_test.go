//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/signing"
)

// The predicate types `cosign verify-attestation --type` maps
// slsaprovenance1 and spdxjson to.
const (
	slsaProvenanceV1 = "https://slsa.dev/provenance/v1"
	spdxDocument     = "https://spdx.dev/Document"
)

// cosignFlags are what a user passes to verify kiln's signatures: the key,
// no transparency log (kiln uploads to none), and plain http for the test
// registries. --new-bundle-format is cosign v3's default for verify and
// verify-attestation and falls back to the legacy tags when an image has
// no bundle, so one command line verifies both formats.
func cosignFlags(pub string) []string {
	return []string{"--key", pub, "--insecure-ignore-tlog=true", "--allow-insecure-registry", "--allow-http-registry"}
}

// cosignEnv keeps cosign off the network and out of the real home: no
// TUF cache, no experimental defaults, no Docker config with credentials.
func cosignEnv(t testing.TB) []string {
	home := t.TempDir()
	return append(os.Environ(), "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"TUF_ROOT="+filepath.Join(home, "tuf"), "COSIGN_EXPERIMENTAL=0")
}

// cosign runs bin/cosign and returns its combined output and error.
func cosign(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.root, "bin", "cosign"), args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("cosign %s: timed out\n%s", strings.Join(args, " "), out.String())
	}
	return out.String(), err
}

func mustCosign(t testing.TB, env []string, args ...string) string {
	t.Helper()
	out, err := cosign(t, env, args...)
	if err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	what := args[0]
	for i, a := range args[:len(args)-1] {
		if a == "--type" {
			what += " --type " + args[i+1]
		}
	}
	t.Logf("cosign %s: ok", what)
	return out
}

// failCosign requires cosign to reject: the proof a check can fail.
func failCosign(t testing.TB, env []string, args ...string) string {
	t.Helper()
	out, err := cosign(t, env, args...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("cosign %s accepted (or did not run: %v):\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func signingFixture(name string) string {
	return filepath.Join(s.root, "internal", "signing", "testdata", name)
}

func fixtureKey(t testing.TB) *signing.Key {
	t.Helper()
	pemBytes, err := os.ReadFile(signingFixture("cosign.key"))
	if err != nil {
		t.Fatal(err)
	}
	pw, err := os.ReadFile(signingFixture("cosign.password"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := signing.ParseKey(pemBytes, bytes.TrimRight(pw, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// referrersRegistry is go-containerregistry's registry with the OCI 1.1
// referrers API on: the native path, where no fallback tag is written.
func referrersRegistry(t testing.TB) string {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.WithReferrersSupport(true), ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func pushRandom(t testing.TB, repo string) (name.Digest, v1.Descriptor) {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(repo+":latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return ref.Context().Digest(d.String()), v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: d}
}

func statement(subject v1.Hash, predicateType, predicate string) []byte {
	return []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app","digest":{"sha256":"` + subject.Hex + `"}}],"predicateType":"` + predicateType + `","predicate":` + predicate + `}`)
}

// Minimal valid predicates of the two types kiln attests.
const (
	provenancePredicate = `{"buildDefinition":{"buildType":"https://kiln.dev/ImageBuild/v1","externalParameters":{}},"runDetails":{"builder":{"id":"https://kiln.dev/kiln@e2e"},"metadata":{"invocationId":"ns/name/uid/1"}}}`
	spdxPredicate       = `{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"app","documentNamespace":"https://kiln.dev/spdx/e2e","creationInfo":{"created":"2026-01-02T03:04:05Z","creators":["Tool: kiln-e2e"]},"packages":[]}`
)

// attach pushes one artifact the way the format wants it: a bundle
// referrer by its digest (ggcr updates the tag-schema fallback index when
// the registry has no referrers API), a legacy image merged into its tag.
func attach(t testing.TB, subject name.Digest, img v1.Image, format signing.Format, tag string) {
	t.Helper()
	if format == signing.FormatBundle {
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(subject.Context().Digest(d.String()), img); err != nil {
			t.Fatalf("pushing the referrer: %v", err)
		}
		return
	}
	ref := subject.Context().Tag(tag)
	var existing v1.Image
	switch got, err := remote.Image(ref); {
	case err == nil:
		existing = got
	case isNotFound(err):
	default:
		t.Fatal(err)
	}
	merged, err := signing.AppendLegacy(existing, img)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, merged); err != nil {
		t.Fatalf("pushing %s: %v", tag, err)
	}
}

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// TestCosignVerifiesKilnSignatures is the proof that what internal/signing
// makes is what cosign v3 accepts: on the CNCF registry (no referrers API,
// so the tag-schema fallback) and on a registry with the referrers API,
// in both formats, `cosign verify`, `cosign verify-attestation` for SLSA
// provenance and SPDX, and `cosign tree` succeed; a tampered signature
// and a wrong key make cosign fail.
func TestCosignVerifiesKilnSignatures(t *testing.T) {
	key := fixtureKey(t)
	pub := signingFixture("cosign.pub")
	env := cosignEnv(t)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	registries := []struct{ name, host string }{
		{"distribution", s.reg.Addr()},
		{"referrers-api", referrersRegistry(t)},
	}
	for _, reg := range registries {
		for _, format := range []signing.Format{signing.FormatBundle, signing.FormatLegacy} {
			t.Run(reg.name+"/"+string(format), func(t *testing.T) {
				repo := reg.host + "/cosign/" + string(format)
				subject, desc := pushRandom(t, repo)
				ref := subject.String()

				sig, err := signing.SignatureArtifact(key, desc, subject.Context().Name(), format, created)
				if err != nil {
					t.Fatal(err)
				}
				attach(t, subject, sig, format, signing.SignatureTag(desc.Digest))
				for _, a := range []struct{ pt, pred string }{{slsaProvenanceV1, provenancePredicate}, {spdxDocument, spdxPredicate}} {
					img, err := signing.AttestationArtifact(key, desc, statement(desc.Digest, a.pt, a.pred), a.pt, format, created)
					if err != nil {
						t.Fatal(err)
					}
					attach(t, subject, img, format, signing.AttestationTag(desc.Digest))
				}

				checkAttached(t, subject, desc.Digest, format, reg.name == "referrers-api")
				// Attaching the same artifacts again changes nothing: the
				// digests are reproducible, so nothing new is listed.
				again, err := signing.SignatureArtifact(key, desc, subject.Context().Name(), format, created)
				if err != nil {
					t.Fatal(err)
				}
				attach(t, subject, again, format, signing.SignatureTag(desc.Digest))
				checkAttached(t, subject, desc.Digest, format, reg.name == "referrers-api")

				done := step(t, "cosign verify")
				out := mustCosign(t, env, append(append([]string{"verify"}, cosignFlags(pub)...), ref)...)
				if !strings.Contains(out, desc.Digest.String()) {
					t.Fatalf("cosign verify output does not name the digest:\n%s", out)
				}
				done()
				for _, typ := range []string{"slsaprovenance1", "spdxjson"} {
					mustCosign(t, env, append(append([]string{"verify-attestation"}, cosignFlags(pub)...), "--type", typ, ref)...)
				}
				tree := mustCosign(t, env, "tree", "--allow-insecure-registry", "--allow-http-registry", ref)
				checkTree(t, tree, format, desc.Digest)

				// Another key: cosign must refuse everything.
				other := otherPublicKey(t)
				failCosign(t, env, append(append([]string{"verify"}, cosignFlags(other)...), ref)...)
				failCosign(t, env, append(append([]string{"verify-attestation"}, cosignFlags(other)...), "--type", "slsaprovenance1", ref)...)

				// A tampered signature on another image: cosign must refuse it.
				tampered, tdesc := pushRandom(t, repo+"-tampered")
				sig, err = signing.SignatureArtifact(key, tdesc, tampered.Context().Name(), format, created)
				if err != nil {
					t.Fatal(err)
				}
				pushTampered(t, tampered, sig, format, signing.SignatureTag(tdesc.Digest))
				out = failCosign(t, env, append(append([]string{"verify"}, cosignFlags(pub)...), tampered.String())...)
				t.Logf("tampered signature rejected: %s", lastLine(out))
			})
		}
	}
}

// checkAttached looks at the registry the way a client would: in the
// bundle format three referrers, listed by the referrers API when the
// registry has one and otherwise in the tag-schema fallback index
// "sha256-<hex>"; in the legacy format one .sig layer and two .att layers.
func checkAttached(t testing.TB, subject name.Digest, d v1.Hash, format signing.Format, referrersAPI bool) {
	t.Helper()
	repo := subject.Context()
	fallback := repo.Tag(d.Algorithm + "-" + d.Hex)
	if format == signing.FormatLegacy {
		for tag, n := range map[string]int{signing.SignatureTag(d): 1, signing.AttestationTag(d): 2} {
			img, err := remote.Image(repo.Tag(tag))
			if err != nil {
				t.Fatal(err)
			}
			if m, err := img.Manifest(); err != nil || len(m.Layers) != n {
				t.Fatalf("%s: %d layers (%v), want %d", tag, len(m.Layers), err, n)
			}
		}
		return
	}
	idx, err := remote.Referrers(subject)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 3 {
		t.Fatalf("%d referrers, want 3: %+v", len(im.Manifests), im.Manifests)
	}
	seen := map[string]bool{}
	for _, desc := range im.Manifests {
		// The fallback index carries the manifest's artifactType; ggcr's
		// registry lists the config media type instead (a quirk of its
		// referrers handler), so the referrer's own manifest is the check.
		if !referrersAPI && desc.ArtifactType != signing.BundleMediaType {
			t.Fatalf("fallback index entry artifactType %q", desc.ArtifactType)
		}
		img, err := remote.Image(repo.Digest(desc.Digest.String()))
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.ArtifactType != signing.BundleMediaType || m.Subject == nil || m.Subject.Digest != d {
			t.Fatalf("referrer %s: artifactType %q subject %+v", desc.Digest, m.ArtifactType, m.Subject)
		}
		seen[m.Annotations[signing.AnnotationBundlePredicateType]] = true
	}
	for _, pt := range []string{signing.CosignSignPredicateType, slsaProvenanceV1, spdxDocument} {
		if !seen[pt] {
			t.Fatalf("no referrer of predicate type %s: %v", pt, seen)
		}
	}
	_, err = remote.Index(fallback)
	switch {
	case referrersAPI && !isNotFound(err):
		t.Fatalf("the registry has the referrers API, yet the fallback tag %s exists (%v)", fallback, err)
	case !referrersAPI && err != nil:
		t.Fatalf("no referrers API and no fallback tag %s: %v", fallback, err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func otherPublicKey(t testing.TB) string {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other.pub")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkTree requires cosign tree to list the three artifacts: in the
// bundle format one referrer per predicate type, in the legacy format the
// .sig and .att tags.
func checkTree(t testing.TB, tree string, format signing.Format, d v1.Hash) {
	t.Helper()
	var want []string
	if format == signing.FormatBundle {
		for _, pt := range []string{signing.CosignSignPredicateType, slsaProvenanceV1, spdxDocument} {
			want = append(want, pt+" artifacts via OCI referrer")
		}
	} else {
		want = []string{"Signatures for an image tag: ", signing.SignatureTag(d), "Attestations for an image tag: ", signing.AttestationTag(d)}
	}
	for _, w := range want {
		if !strings.Contains(tree, w) {
			t.Fatalf("cosign tree does not list %q:\n%s", w, tree)
		}
	}
}

// pushTampered pushes img with one bit of its signature flipped: in the
// DSSE envelope of the bundle, or in the legacy layer's annotation.
func pushTampered(t testing.TB, subject name.Digest, img v1.Image, format signing.Format, tag string) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	repo := subject.Context()
	if format == signing.FormatBundle {
		rc, err := ls[0].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		var bundle map[string]any
		if err := json.Unmarshal(b, &bundle); err != nil {
			t.Fatal(err)
		}
		sigs := bundle["dsseEnvelope"].(map[string]any)["signatures"].([]any)
		s0 := sigs[0].(map[string]any)
		s0["sig"] = flipBit(t, s0["sig"].(string))
		nb, err := json.Marshal(bundle)
		if err != nil {
			t.Fatal(err)
		}
		layer := static.NewLayer(nb, types.MediaType(signing.BundleMediaType))
		if err := remote.WriteLayer(repo, layer); err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteLayer(repo, static.NewLayer([]byte("{}"), signing.EmptyMediaType)); err != nil {
			t.Fatal(err)
		}
		d, _ := layer.Digest()
		m.Layers[0].Digest, m.Layers[0].Size = d, int64(len(nb))
		putManifest(t, m, func(h v1.Hash) name.Reference { return repo.Digest(h.String()) })
		return
	}
	for _, l := range ls {
		if err := remote.WriteLayer(repo, l); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, static.NewLayer(cfg, m.Config.MediaType)); err != nil {
		t.Fatal(err)
	}
	m.Layers[0].Annotations[signing.AnnotationSignature] = flipBit(t, m.Layers[0].Annotations[signing.AnnotationSignature])
	putManifest(t, m, func(v1.Hash) name.Reference { return repo.Tag(tag) })
}

func flipBit(t testing.TB, b64 string) string {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-3] ^= 0x01
	return base64.StdEncoding.EncodeToString(raw)
}

type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

func putManifest(t testing.TB, m *v1.Manifest, ref func(v1.Hash) name.Reference) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(ref(h), rawManifest{b, m.MediaType}); err != nil {
		t.Fatal(err)
	}
}

// TestCosignVerifiesSignedIndex: a multi-platform image is signed as the
// index and as each child, and cosign verifies every one of them, by the
// index digest and by each child digest, in both formats.
func TestCosignVerifiesSignedIndex(t *testing.T) {
	key := fixtureKey(t)
	pub := signingFixture("cosign.pub")
	env := cosignEnv(t)
	for _, format := range []signing.Format{signing.FormatBundle, signing.FormatLegacy} {
		t.Run(string(format), func(t *testing.T) {
			repo := s.reg.Addr() + "/cosign/index-" + string(format)
			idx, err := random.Index(1024, 1, 2)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := name.ParseReference(repo+":latest", name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.WriteIndex(ref, idx); err != nil {
				t.Fatal(err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			raw, err := idx.RawManifest()
			if err != nil {
				t.Fatal(err)
			}
			d, err := idx.Digest()
			if err != nil {
				t.Fatal(err)
			}
			subjects := append([]v1.Descriptor{{MediaType: im.MediaType, Size: int64(len(raw)), Digest: d}}, im.Manifests...)
			for _, desc := range subjects {
				subject := ref.Context().Digest(desc.Digest.String())
				sig, err := signing.SignatureArtifact(key, desc, ref.Context().Name(), format, time.Time{})
				if err != nil {
					t.Fatal(err)
				}
				attach(t, subject, sig, format, signing.SignatureTag(desc.Digest))
			}
			for _, desc := range subjects {
				mustCosign(t, env, append(append([]string{"verify"}, cosignFlags(pub)...), ref.Context().Digest(desc.Digest.String()).String())...)
			}
		})
	}
}
