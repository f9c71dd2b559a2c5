package engine

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/api/v1alpha1/v1alpha1test"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/signing"
	"github.com/kiln-build/kiln/internal/testkit"
)

// signedBuild is a one-layer image signed with key (cosign-key Secret)
// and both attestations, in the given format.
func signedBuild(t *testing.T, reg *testkit.Registry, files *testkit.FileServer, format kilnv1.SignatureFormat) *kilnv1.ImageBuild {
	t.Helper()
	rootfs := testkit.Tar(t, testkit.Dir("etc/"), testkit.File("etc/app.conf", "port=8080\n"), testkit.File("bin/app", "#!app"))
	ib := imageBuild("app", reg.Host+"/team/app:1.0", urlLayer("rootfs", files.Put("/rootfs.tar.gz", testkit.Gzip(t, rootfs))+"?token=SECRET-TOKEN"))
	ib.UID = "uid-1"
	ib.Spec.Signing, ib.Spec.Attestations = v1alpha1test.SigningSpec()
	ib.Spec.Signing.Cosign.Format = format
	return ib
}

func keyInputs(key []byte) Inputs {
	return Inputs{Secrets: map[string]map[string][]byte{"cosign-key": {kilnv1.CosignKeyKey: key, kilnv1.CosignPasswordKey: nil}}}
}

// attached lists the artifact digests kiln recorded, signatures first.
func attached(st kilnv1.ImageBuildStatus) []string {
	var out []string
	for _, a := range append(append([]kilnv1.AttachedArtifact{}, st.Signatures...), st.Attestations...) {
		out = append(out, a.Type+" "+a.Subject+" "+a.Digest)
	}
	return out
}

func TestSigningAttachesSignatureAndAttestations(t *testing.T) {
	for _, tc := range []struct {
		name      string
		referrers bool
		format    kilnv1.SignatureFormat
	}{
		{"bundle, referrers API", true, kilnv1.SignatureBundle},
		{"bundle, tag-schema fallback", false, kilnv1.SignatureBundle},
		{"legacy tags", false, kilnv1.SignatureLegacy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reg *testkit.Registry
			if tc.referrers {
				reg = testkit.NewRegistry(t, ggcrregistry.WithReferrersSupport(true))
			} else {
				reg = testkit.NewRegistry(t)
			}
			files := testkit.NewFileServer(t)
			key, _ := testkit.SigningKey(t)
			ib := signedBuild(t, reg, files, tc.format)
			eng := newEngine(t, "")
			res, err := eng.Build(context.Background(), ib, keyInputs(key), Options{})
			if err != nil {
				t.Fatal(err)
			}
			st := res.Status
			if len(st.Signatures) != 1 || len(st.Attestations) != 2 || res.SignaturesWritten != 1 || res.AttestationsWritten != 2 {
				t.Fatalf("signatures %v attestations %v, written %d/%d; want 1 and 2, all written",
					st.Signatures, st.Attestations, res.SignaturesWritten, res.AttestationsWritten)
			}
			for _, a := range append(st.Signatures, st.Attestations...) {
				if a.Subject != st.Digest {
					t.Errorf("%s is about %s, want the image %s", a.Type, a.Subject, st.Digest)
				}
			}
			if got := st.Attestations[0].Type + "," + st.Attestations[1].Type; got != "spdx,slsaprovenance1" {
				t.Errorf("attestation types %s", got)
			}
			statements := registryStatements(t, reg.Host+"/team/app", st, tc.format)
			if len(statements) != 3 {
				t.Fatalf("found %d signed statements in the registry, want 3", len(statements))
			}
			for _, s := range statements {
				if strings.Contains(s, "SECRET-TOKEN") {
					t.Errorf("a statement shows the URL's query: %s", s)
				}
			}
			sbom := statements[1]
			for _, want := range []string{`"fileName":"./etc/app.conf"`, "https://spdx.dev/Document", `"SPDX-2.3"`} {
				if !strings.Contains(sbom, want) {
					t.Errorf("SBOM lacks %s:\n%s", want, sbom)
				}
			}
			if !strings.Contains(statements[2], "https://kiln.dev/ImageBuild/v1") || !strings.Contains(statements[2], "default/app/uid-1/1") {
				t.Errorf("provenance lacks buildType or invocationId:\n%s", statements[2])
			}

			// Unchanged: the same artifacts are found attached, nothing written.
			reg.Reset()
			again, err := eng.Build(context.Background(), ib, keyInputs(key), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if w := reg.Writes(); w != 0 || again.SignaturesWritten+again.AttestationsWritten != 0 {
				t.Errorf("unchanged re-run wrote %d requests, %d signatures, %d attestations; want none", w, again.SignaturesWritten, again.AttestationsWritten)
			}
			if a, b := strings.Join(attached(st), "\n"), strings.Join(attached(again.Status), "\n"); a != b {
				t.Errorf("re-run attached other artifacts:\n%s\nvs\n%s", a, b)
			}

			// Reproducible: another cache, same key and inputs, same digests.
			other, err := newEngine(t, "").Build(context.Background(), ib, keyInputs(key), Options{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if a, b := strings.Join(attached(st), "\n"), strings.Join(attached(other.Status), "\n"); a != b {
				t.Errorf("digests differ between two engines:\n%s\nvs\n%s", a, b)
			}

			// Key rotation: signed again, no layer encoded again.
			rotated, _ := testkit.SigningKey(t)
			reg.Reset()
			res3, err := eng.Build(context.Background(), ib, keyInputs(rotated), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if res3.Encoded != 0 || res3.Status.Digest != st.Digest {
				t.Errorf("rotation encoded %d layers, image %s (was %s); want 0 and the same image", res3.Encoded, res3.Status.Digest, st.Digest)
			}
			if res3.SignaturesWritten != 1 || res3.AttestationsWritten != 2 || res3.Status.Signatures[0].Digest == st.Signatures[0].Digest {
				t.Errorf("rotation wrote %d signatures, %d attestations (digest %s); want new ones", res3.SignaturesWritten, res3.AttestationsWritten, res3.Status.Signatures[0].Digest)
			}
			if got := reg.Count("PUT manifest"); tc.format == kilnv1.SignatureBundle && got == 0 {
				t.Error("rotation wrote no manifest")
			}
		})
	}
}

// registryStatements reads back the signed in-toto statements attached to
// st.Digest, in the order of status (signature, SBOM, provenance): from
// the referrers (bundle) or from the legacy .sig/.att tags.
func registryStatements(t *testing.T, repo string, st kilnv1.ImageBuildStatus, format kilnv1.SignatureFormat) []string {
	t.Helper()
	var out []string
	for _, a := range append(append([]kilnv1.AttachedArtifact{}, st.Signatures...), st.Attestations...) {
		if format == kilnv1.SignatureLegacy {
			tag := repo + ":" + strings.Replace(a.Subject, ":", "-", 1) + ".att"
			if a.Type == signatureKind {
				tag = strings.TrimSuffix(tag, ".att") + ".sig"
			}
			if a.Tag == "" || !strings.HasSuffix(tag, a.Tag) {
				t.Errorf("%s: status tag %q, want %s", a.Type, a.Tag, tag)
			}
			out = append(out, string(legacyStatement(t, tag, a.Type)))
			continue
		}
		if !a.Referrer {
			t.Errorf("%s is not recorded as a referrer", a.Type)
		}
		b := layerWithDigest(t, repo+"@"+a.Digest)
		var bundle struct {
			DSSEEnvelope signing.Envelope `json:"dsseEnvelope"`
		}
		if err := json.Unmarshal(b, &bundle); err != nil {
			t.Fatalf("%s: bundle: %v", a.Type, err)
		}
		out = append(out, string(bundle.DSSEEnvelope.Payload))
	}
	return out
}

// layerWithDigest returns the bytes of ref's first layer.
func layerWithDigest(t *testing.T, ref string) []byte {
	t.Helper()
	ls, err := pull(t, ref).Layers()
	if err != nil || len(ls) == 0 {
		t.Fatalf("%s: layers %d: %v", ref, len(ls), err)
	}
	return readLayer(t, ls[0])
}

func readLayer(t *testing.T, l v1.Layer) []byte { return testkit.ReadAll(t, l.Compressed) }

// legacyStatement returns the payload kiln attached in a legacy tag: the
// simple-signing payload of the .sig tag, or the statement of the .att
// layer annotated with the attestation type's predicate type.
func legacyStatement(t *testing.T, tag, kind string) []byte {
	t.Helper()
	img := pull(t, tag)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	predicate := map[string]string{"spdx": "https://spdx.dev/Document", "slsaprovenance1": "https://slsa.dev/provenance/v1"}[kind]
	for _, d := range m.Layers {
		if kind != signatureKind && d.Annotations[signing.AnnotationPredicateType] != predicate {
			continue
		}
		l, err := img.LayerByDigest(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		b := readLayer(t, l)
		if kind == signatureKind {
			return b
		}
		var env signing.Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatalf("%s: DSSE envelope: %v", tag, err)
		}
		return env.Payload
	}
	t.Fatalf("%s has no %s layer", tag, kind)
	return nil
}

func TestSigningKeyErrorsPushNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     Inputs
		reason failure.Reason
		want   string
	}{
		{"no Secret", Inputs{}, failure.SigningKeyNotFound, `Secret "cosign-key" (spec.signing.cosign.keyRef) not found`},
		{"no cosign.key", Inputs{Secrets: map[string]map[string][]byte{"cosign-key": {"key": []byte("x")}}}, failure.SigningKeyNotFound, `has no key "cosign.key"`},
		{"not a key", keyInputs([]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")), failure.SigningKeyInvalid, "not a cosign private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, files := testkit.NewRegistry(t), testkit.NewFileServer(t)
			ib := signedBuild(t, reg, files, kilnv1.SignatureBundle)
			_, err := newEngine(t, "").Build(context.Background(), ib, tc.in, Options{})
			if failure.ReasonOf(err) != tc.reason || !failure.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v (reason %s), want permanent %s containing %q", err, failure.ReasonOf(err), tc.reason, tc.want)
			}
			if w := reg.Writes(); w != 0 {
				t.Errorf("%d writes to the registry; a build with a bad key pushes nothing", w)
			}
		})
	}
}

func TestSigningAnIndexSignsEveryChildAndTheIndex(t *testing.T) {
	reg, files := testkit.NewRegistry(t, ggcrregistry.WithReferrersSupport(true)), testkit.NewFileServer(t)
	ib := signedBuild(t, reg, files, kilnv1.SignatureBundle)
	ib.Spec.Base = &kilnv1.Base{Image: "scratch"}
	ib.Spec.Platforms = []kilnv1.PlatformBuild{{Platform: "linux/amd64"}, {Platform: "linux/arm64"}}
	key, _ := testkit.SigningKey(t)
	res, err := newEngine(t, "").Build(context.Background(), ib, keyInputs(key), Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := res.Status
	want := map[string]string{st.Manifests[0].Digest: "linux/amd64", st.Manifests[1].Digest: "linux/arm64", st.Digest: ""}
	if len(st.Signatures) != 3 || len(st.Attestations) != 6 {
		t.Fatalf("%d signatures, %d attestations; want 3 and 6 (two children and the index)", len(st.Signatures), len(st.Attestations))
	}
	for _, s := range append(st.Signatures, st.Attestations...) {
		p, ok := want[s.Subject]
		if !ok || p != s.Platform {
			t.Errorf("%s about %s (platform %q) is not one of the pushed manifests", s.Type, s.Subject, s.Platform)
		}
	}
	for d := range want {
		ref, err := name.NewDigest(reg.Host + "/team/app@" + d)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Referrers(ref)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := idx.IndexManifest()
		if len(m.Manifests) != 3 {
			t.Errorf("%s has %d referrers, want 3", d, len(m.Manifests))
		}
	}
}
