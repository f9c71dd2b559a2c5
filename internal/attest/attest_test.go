package attest

import (
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/testkit"
	"github.com/kiln-build/kiln/internal/version"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func hashOf(s string) v1.Hash { return testkit.Hash([]byte(s)) }

// The source URL of the first layer carries a password and a pre-signed
// query: none of it may reach an attestation.
const secretURL = "https://deployer:hunter2@artifacts.example/rootfs.tar.gz?X-Amz-Signature=s3cr3t&token=t0ken#frag"

var created = time.Date(2024, 5, 6, 7, 8, 9, 0, time.FixedZone("CEST", 2*3600))

func sampleImage() Image {
	files := layer.NewFileList(0)
	files.Files = []layer.File{
		{Path: "bin/sh", Digest: hashOf("sh"), Size: 2},
		{Path: "etc/passwd", Digest: hashOf("passwd"), Size: 6},
	}
	files.Count = 2
	return Image{
		Name:   "registry.example:5000/team/app",
		Digest: hashOf("manifest"),
		Base:   &Dependency{Name: "docker.io/library/alpine", Digest: hashOf("alpine")},
		Layers: []Layer{
			{Name: "rootfs", URI: secretURL, SourceDigest: hashOf("rootfs.tar.gz"), DiffID: hashOf("rootfs.tar"), Digest: hashOf("blob0"), Files: files},
			{Name: "big", URI: "configMap:team-a/app-files/app.tar.gz", SourceDigest: hashOf("big"), DiffID: hashOf("big.tar"), Digest: hashOf("blob1"),
				Files: &layer.FileList{Count: 250000, Omitted: true}},
			{Name: "creds", URI: "secret:team-a/creds/tls.tar", DiffID: hashOf("creds.tar"), Digest: hashOf("blob2")},
		},
	}
}

func sampleBuild() Build {
	spec := map[string]any{
		"base":   map[string]any{"image": "docker.io/library/alpine:3.20"},
		"layers": []any{map[string]any{"name": "rootfs", "source": map[string]any{"url": secretURL}}},
		"target": map[string]any{"image": "registry.example:5000/team/app:1.0"},
		"config": map[string]any{"env": []any{map[string]any{"name": "A", "value": "1"}}, "user": "65532"},
	}
	return Build{Spec: spec, Namespace: "team-a", Name: "app", UID: "0f8e-uid", Generation: 3}
}

// predicate decodes a statement, checks its envelope and returns its predicate.
func predicate(t *testing.T, raw []byte, predicateType string, img Image) map[string]any {
	t.Helper()
	var st struct {
		Type          string `json:"_type"`
		Subject       []map[string]any
		PredicateType string
		Predicate     map[string]any
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != StatementType || st.PredicateType != predicateType {
		t.Errorf("_type %q predicateType %q, want %q %q", st.Type, st.PredicateType, StatementType, predicateType)
	}
	want := []map[string]any{{"name": img.Name, "digest": map[string]any{"sha256": img.Digest.Hex}}}
	if !jsonEqual(t, st.Subject, want) {
		t.Errorf("subject = %v, want %v", st.Subject, want)
	}
	return st.Predicate
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}

var spdxIDPattern = regexp.MustCompile(`^SPDXRef-[A-Za-z0-9.-]+$`)

// TestSBOMValidates checks the SPDX document against the SPDX 2.3 JSON
// schema (spdx/spdx-spec v2.3, schemas/spdx-schema.json) with the
// validator in schema_test.go, and against the rules of the SPDX 2.3 text
// the schema does not encode: SPDXID syntax and uniqueness, relationships
// naming elements of the document, the created timestamp's form, a
// namespace without '#', lower-case hex checksums, "./" file names.
func TestSBOMValidates(t *testing.T) {
	img := sampleImage()
	raw, err := SBOM(img, created)
	if err != nil {
		t.Fatal(err)
	}
	pred := predicate(t, raw, PredicateSPDX, img)
	docRaw, err := json.Marshal(pred)
	if err != nil {
		t.Fatal(err)
	}
	doc := decode(t, docRaw)
	if errs := loadSPDXSchema(t).validate(doc, "$"); len(errs) > 0 {
		t.Fatalf("SPDX schema violations:\n%s", strings.Join(errs, "\n"))
	}

	var d spdxDocument
	if err := json.Unmarshal(docRaw, &d); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, id := range append(append([]string{d.SPDXID}, pkgIDs(d)...), fileIDs(d)...) {
		if !spdxIDPattern.MatchString(id) || ids[id] {
			t.Errorf("SPDXID %q: malformed or repeated", id)
		}
		ids[id] = true
	}
	for _, r := range d.Relationships {
		if !ids[r.SPDXElementID] || !ids[r.RelatedSPDXElement] {
			t.Errorf("relationship %+v names an element not in the document", r)
		}
	}
	if d.CreationInfo.Created != "2024-05-06T05:08:09Z" {
		t.Errorf("created = %q, want created in UTC, YYYY-MM-DDThh:mm:ssZ", d.CreationInfo.Created)
	}
	if want := []string{"Tool: kiln-" + version.Version}; !jsonEqual(t, d.CreationInfo.Creators, want) {
		t.Errorf("creators = %q, want %q", d.CreationInfo.Creators, want)
	}
	if ns := d.DocumentNamespace; strings.Contains(ns, "#") || !strings.HasSuffix(ns, "sha256-"+img.Digest.Hex) {
		t.Errorf("documentNamespace %q: want it derived from the image digest, without '#'", ns)
	}
	hex := regexp.MustCompile(`^[0-9a-f]{64}$`)
	for _, p := range d.Packages {
		for _, c := range p.Checksums {
			if !hex.MatchString(c.ChecksumValue) {
				t.Errorf("package %s checksum %q", p.Name, c.ChecksumValue)
			}
		}
	}
	for _, f := range d.Files {
		if !strings.HasPrefix(f.FileName, "./") || !hex.MatchString(f.Checksums[0].ChecksumValue) {
			t.Errorf("file %+v", f)
		}
	}
}

func pkgIDs(d spdxDocument) []string {
	var out []string
	for _, p := range d.Packages {
		out = append(out, p.SPDXID)
	}
	return out
}

func fileIDs(d spdxDocument) []string {
	var out []string
	for _, f := range d.Files {
		out = append(out, f.SPDXID)
	}
	return out
}

// TestSBOMContent: what each package and file says.
func TestSBOMContent(t *testing.T) {
	img := sampleImage()
	raw, err := SBOM(img, created)
	if err != nil {
		t.Fatal(err)
	}
	var d spdxDocument
	if err := json.Unmarshal(mustJSON(t, predicate(t, raw, PredicateSPDX, img)), &d); err != nil {
		t.Fatal(err)
	}
	byName := map[string]spdxPackage{}
	for _, p := range d.Packages {
		byName[p.Name] = p
	}
	if len(d.Packages) != 5 {
		t.Fatalf("%d packages, want image, base and 3 layers", len(d.Packages))
	}
	base := byName["docker.io/library/alpine"]
	if base.VersionInfo != img.Base.Digest.String() || base.Checksums[0].ChecksumValue != img.Base.Digest.Hex ||
		base.ExternalRefs[0].ReferenceLocator != "pkg:oci/alpine@sha256%3A"+img.Base.Digest.Hex+"?repository_url=docker.io/library/alpine" {
		t.Errorf("base package = %+v", base)
	}
	rootfs := byName["rootfs"]
	if rootfs.DownloadLocation != "https://artifacts.example/rootfs.tar.gz" || !rootfs.FilesAnalyzed ||
		rootfs.Checksums[0] != (spdxChecksum{"SHA256", hashOf("rootfs.tar.gz").Hex}) {
		t.Errorf("rootfs package = %+v", rootfs)
	}
	wantRefs := []spdxExternalRef{{"OTHER", "oci-diffid", hashOf("rootfs.tar").String()}, {"OTHER", "oci-layer-digest", hashOf("blob0").String()}}
	if !jsonEqual(t, rootfs.ExternalRefs, wantRefs) {
		t.Errorf("rootfs externalRefs = %+v, want %+v", rootfs.ExternalRefs, wantRefs)
	}
	big := byName["big"]
	if big.FilesAnalyzed || !strings.Contains(big.Comment, "omitted") || !strings.Contains(big.Comment, "250000") ||
		big.DownloadLocation != "configMap:team-a/app-files/app.tar.gz" {
		t.Errorf("omitted-list package = %+v, want filesAnalyzed false and a comment saying why", big)
	}
	creds := byName["creds"]
	if creds.FilesAnalyzed || creds.Checksums != nil || !strings.Contains(creds.Comment, "not requested") {
		t.Errorf("secret layer package = %+v, want no checksum (the source digest is not shown) and no files", creds)
	}
	want := []spdxFile{
		{SPDXID: "SPDXRef-File-0-0", FileName: "./bin/sh", Checksums: []spdxChecksum{{"SHA256", hashOf("sh").Hex}}},
		{SPDXID: "SPDXRef-File-0-1", FileName: "./etc/passwd", Checksums: []spdxChecksum{{"SHA256", hashOf("passwd").Hex}}},
	}
	if !jsonEqual(t, d.Files, want) {
		t.Errorf("files = %+v, want %+v", d.Files, want)
	}
	rels := map[spdxRelationship]bool{}
	for _, r := range d.Relationships {
		rels[r] = true
	}
	for _, r := range []spdxRelationship{
		{"SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image"}, {"SPDXRef-Image", "DESCENDANT_OF", "SPDXRef-Base"},
		{"SPDXRef-Image", "CONTAINS", "SPDXRef-Layer-2"}, {"SPDXRef-Layer-0", "CONTAINS", "SPDXRef-File-0-1"},
	} {
		if !rels[r] {
			t.Errorf("relationship %+v missing", r)
		}
	}
	if len(d.Relationships) != 1+1+3+2 {
		t.Errorf("%d relationships, want 7", len(d.Relationships))
	}

	scratch := img
	scratch.Base = nil
	raw, err = SBOM(scratch, created)
	if err != nil || strings.Contains(string(raw), "SPDXRef-Base") {
		t.Errorf("scratch image: %v, base package present: %v", err, strings.Contains(string(raw), "SPDXRef-Base"))
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestProvenanceFields(t *testing.T) {
	img, b := sampleImage(), sampleBuild()
	raw, err := Provenance(img, b, created)
	if err != nil {
		t.Fatal(err)
	}
	var p slsaProvenance
	if err := json.Unmarshal(mustJSON(t, predicate(t, raw, PredicateSLSA, img)), &p); err != nil {
		t.Fatal(err)
	}
	bd, rd := p.BuildDefinition, p.RunDetails
	if bd.BuildType != "https://kiln.dev/ImageBuild/v1" {
		t.Errorf("buildType = %q", bd.BuildType)
	}
	wantSpec := sampleBuild().Spec.(map[string]any)
	wantSpec["layers"].([]any)[0].(map[string]any)["source"].(map[string]any)["url"] = "https://artifacts.example/rootfs.tar.gz"
	if !jsonEqual(t, bd.ExternalParameters, wantSpec) {
		t.Errorf("externalParameters = %v, want the spec with its URL redacted %v", bd.ExternalParameters, wantSpec)
	}
	if bd.InternalParameters != nil {
		t.Errorf("internalParameters = %v, want none when not given", bd.InternalParameters)
	}
	wantDeps := []resourceDescriptor{
		{URI: "pkg:oci/alpine@sha256%3A" + hashOf("alpine").Hex + "?repository_url=docker.io/library/alpine", Digest: map[string]string{"sha256": hashOf("alpine").Hex}, Name: "base"},
		{URI: "https://artifacts.example/rootfs.tar.gz", Digest: map[string]string{"sha256": hashOf("rootfs.tar.gz").Hex}, Name: "layer/rootfs"},
		{URI: "configMap:team-a/app-files/app.tar.gz", Digest: map[string]string{"sha256": hashOf("big").Hex}, Name: "layer/big"},
		{URI: "secret:team-a/creds/tls.tar", Name: "layer/creds"},
	}
	if !jsonEqual(t, bd.ResolvedDependencies, wantDeps) {
		t.Errorf("resolvedDependencies =\n%+v\nwant\n%+v", bd.ResolvedDependencies, wantDeps)
	}
	if rd.Builder.ID != "https://kiln.dev/kiln@"+version.Version {
		t.Errorf("builder.id = %q, want the default", rd.Builder.ID)
	}
	wantMeta := slsaMetadata{InvocationID: "team-a/app/0f8e-uid/3", StartedOn: "2024-05-06T05:08:09Z", FinishedOn: "2024-05-06T05:08:09Z"}
	if rd.Metadata != wantMeta {
		t.Errorf("metadata = %+v, want %+v", rd.Metadata, wantMeta)
	}
	if len(rd.Byproducts) != 3 || rd.Byproducts[1].Name != "layer/big/diffID" || rd.Byproducts[1].Digest["sha256"] != hashOf("big.tar").Hex {
		t.Errorf("byproducts = %+v, want each layer's diffID", rd.Byproducts)
	}

	b.BuilderID, b.Internal = "https://ci.example/kiln-prod", map[string]any{"engine": version.Engine}
	raw, err = Provenance(img, b, created)
	if err != nil {
		t.Fatal(err)
	}
	p = slsaProvenance{}
	if err := json.Unmarshal(mustJSON(t, predicate(t, raw, PredicateSLSA, img)), &p); err != nil {
		t.Fatal(err)
	}
	if p.RunDetails.Builder.ID != b.BuilderID || !jsonEqual(t, p.BuildDefinition.InternalParameters, b.Internal) {
		t.Errorf("builder %q internal %v, want %q %v", p.RunDetails.Builder.ID, p.BuildDefinition.InternalParameters, b.BuilderID, b.Internal)
	}
	// A spec given as raw JSON is the same externalParameters.
	b.Spec = json.RawMessage(mustJSON(t, sampleBuild().Spec))
	again, err := Provenance(img, b, created)
	if err != nil || !bytes.Equal(again, raw) {
		t.Errorf("raw JSON spec: %v, same bytes %v", err, bytes.Equal(again, raw))
	}
}

// TestDeterministic: the same inputs give the same bytes (maps with many
// keys included, whose iteration order Go randomizes); created is the
// only time in them.
func TestDeterministic(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(Image, time.Time) ([]byte, error)
	}{
		{"sbom", SBOM},
		{"provenance", func(img Image, c time.Time) ([]byte, error) {
			b := sampleBuild()
			labels := map[string]any{}
			for i := range 50 {
				labels[string(rune('a'+i%26))+strings.Repeat("x", i)] = i
			}
			b.Spec.(map[string]any)["config"].(map[string]any)["labels"] = labels
			return Provenance(img, b, c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, err := tc.make(sampleImage(), created)
			if err != nil {
				t.Fatal(err)
			}
			for range 20 {
				again, err := tc.make(sampleImage(), created)
				if err != nil || !bytes.Equal(first, again) {
					t.Fatalf("second rendering differs (err %v)", err)
				}
			}
			later, err := tc.make(sampleImage(), created.Add(time.Hour))
			if err != nil || bytes.Equal(first, later) {
				t.Errorf("a different created gives the same bytes (err %v): created is not in them", err)
			}
			if strings.Contains(string(first), time.Now().UTC().Format("2006-01-02")) {
				t.Errorf("today's date appears: the clock leaked in")
			}
		})
	}
}

// TestNoSecretsInAttestations: neither statement shows a URL's userinfo,
// query or fragment, wherever the URL was (layer URI, spec, internal
// parameters).
func TestNoSecretsInAttestations(t *testing.T) {
	img, b := sampleImage(), sampleBuild()
	b.Internal = map[string]any{"mirror": "http://u:pw@mirror.example/x?sig=s3cr3t"}
	sbom, err := SBOM(img, created)
	if err != nil {
		t.Fatal(err)
	}
	prov, err := Provenance(img, b, created)
	if err != nil {
		t.Fatal(err)
	}
	for name, raw := range map[string][]byte{"sbom": sbom, "provenance": prov} {
		for _, banned := range []string{"deployer", "hunter2", "X-Amz", "s3cr3t", "t0ken", "token=", "frag", "pw@", "sig="} {
			if bytes.Contains(raw, []byte(banned)) {
				t.Errorf("%s contains %q", name, banned)
			}
		}
		if !bytes.Contains(raw, []byte("https://artifacts.example/rootfs.tar.gz")) {
			t.Errorf("%s lacks the redacted location", name)
		}
	}
	for in, want := range map[string]string{
		secretURL:                          "https://artifacts.example/rootfs.tar.gz",
		"configMap:ns/name/key":            "configMap:ns/name/key",
		"registry.example/r@sha256:abc":    "registry.example/r@sha256:abc",
		"secret:ns/name/key?x=1":           "secret:ns/name/key",
		"http://a b/c?x":                   "<invalid URL>",
		"s3://bucket/key?X-Amz-Credential": "s3://bucket/key",
	} {
		if got := RedactURI(in); got != want {
			t.Errorf("RedactURI(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInvalidInput(t *testing.T) {
	for name, mutate := range map[string]func(*Image, *Build){
		"no name":            func(i *Image, _ *Build) { i.Name = "" },
		"no digest":          func(i *Image, _ *Build) { i.Digest = v1.Hash{} },
		"sha512 base":        func(i *Image, _ *Build) { i.Base.Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("0", 128)} },
		"layer without diff": func(i *Image, _ *Build) { i.Layers[1].DiffID = v1.Hash{} },
		"spec not an object": func(_ *Image, b *Build) { b.Spec = []string{"x"} },
	} {
		img, b := sampleImage(), sampleBuild()
		mutate(&img, &b)
		_, perr := Provenance(img, b, created)
		_, serr := SBOM(img, created)
		if perr == nil || (serr == nil && name != "spec not an object") {
			t.Errorf("%s: provenance %v, sbom %v; want errors", name, perr, serr)
		}
	}
}
