package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// SamplePattern matches the ImageBuild samples under config/samples.
const SamplePattern = "kiln_v1alpha1_*.yaml"

// DefaultArtifactHost is the host of the samples' example layer URLs.
const DefaultArtifactHost = "artifacts.example"

// LoadSamples reads every ImageBuild document of the files in dir matching
// SamplePattern, in file name order. Other kinds are skipped.
func LoadSamples(dir string) ([]*kilnv1.ImageBuild, error) {
	files, err := filepath.Glob(filepath.Join(dir, SamplePattern))
	if err != nil {
		return nil, fmt.Errorf("listing samples: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no samples matching %s in %s", SamplePattern, dir)
	}
	sort.Strings(files)
	var out []*kilnv1.ImageBuild
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading sample: %w", err)
		}
		ibs, err := DecodeImageBuilds(b)
		if err != nil {
			return nil, fmt.Errorf("sample %s: %w", filepath.Base(f), err)
		}
		out = append(out, ibs...)
	}
	return out, nil
}

// DecodeImageBuilds decodes the ImageBuild documents of a multi-document
// YAML stream, rejecting unknown fields so a stale sample fails loudly.
func DecodeImageBuilds(b []byte) ([]*kilnv1.ImageBuild, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []*kilnv1.ImageBuild
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if tm.Kind != "ImageBuild" {
			continue
		}
		ib := &kilnv1.ImageBuild{}
		if err := yaml.UnmarshalStrict(doc, ib); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, ib)
	}
}

// Rewriter points samples at the sandbox: every image reference's registry
// becomes Registry (the repository path is kept) and every URL on
// ArtifactHost becomes FileURL(path). Everything else is left as is.
type Rewriter struct {
	// Registry is host:port of the local registry.
	Registry string
	// ArtifactHost is the URL host to replace; default DefaultArtifactHost.
	ArtifactHost string
	// FileURL maps a path on ArtifactHost (no leading slash) to a local URL.
	FileURL func(name string) string
}

// Rewrite changes ib in place: base image, base archive and layer sources
// (url and blob) and the target image.
func (r Rewriter) Rewrite(ib *kilnv1.ImageBuild) error {
	var errs []error
	check := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", ib.Name, field, err))
		}
	}
	if b := ib.Spec.Base; b != nil && b.Image != "" && b.Image != "scratch" {
		check("spec.base.image", r.setRef(&b.Image))
	}
	for i := range ib.Spec.Platforms {
		if b := ib.Spec.Platforms[i].Base; b != nil && b.Image != "" && b.Image != "scratch" {
			check(fmt.Sprintf("spec.platforms[%d].base.image", i), r.setRef(&b.Image))
		}
	}
	for _, s := range ib.Spec.AllSources() {
		check("source", r.source(s))
	}
	check("spec.target.image", r.setRef(&ib.Spec.Target.Image))
	return errors.Join(errs...)
}

// setRef rewrites *s in place, leaving it unchanged on error.
func (r Rewriter) setRef(s *string) error {
	v, err := r.ref(*s)
	if err == nil {
		*s = v
	}
	return err
}

func (r Rewriter) source(s *kilnv1.Source) error {
	if s.URL != "" {
		u, err := r.url(s.URL)
		if err != nil {
			return err
		}
		s.URL = u
	}
	if s.Blob != "" {
		return r.setRef(&s.Blob)
	}
	return nil
}

// ref moves an image reference to r.Registry, keeping repository and tag or
// digest; Docker Hub short names keep their implied library/ path.
func (r Rewriter) ref(s string) (string, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return "", fmt.Errorf("parsing image reference %q: %w", s, err)
	}
	repo := r.Registry + "/" + ref.Context().RepositoryStr()
	switch v := ref.(type) {
	case name.Digest:
		return repo + "@" + v.DigestStr(), nil
	case name.Tag:
		return repo + ":" + v.TagStr(), nil
	}
	return "", fmt.Errorf("image reference %q is neither a tag nor a digest", s)
}

func (r Rewriter) url(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("parsing URL %q: %w", s, err)
	}
	host := r.ArtifactHost
	if host == "" {
		host = DefaultArtifactHost
	}
	if !strings.EqualFold(u.Hostname(), host) {
		return s, nil
	}
	if r.FileURL == nil {
		return "", fmt.Errorf("URL %q: no file server to point it at", s)
	}
	return r.FileURL(strings.TrimPrefix(u.Path, "/")), nil
}

// ConfigMapsFor returns the ConfigMaps that builds reference (layer and base
// archive sources), in namespace, each key filled from files[key] as
// binaryData. A referenced key without a file is an error.
func ConfigMapsFor(builds []*kilnv1.ImageBuild, namespace string, files map[string][]byte) ([]*corev1.ConfigMap, error) {
	byName := map[string]*corev1.ConfigMap{}
	var names []string
	add := func(ib *kilnv1.ImageBuild, s *kilnv1.Source) error {
		if s.ConfigMap == nil {
			return nil
		}
		data, ok := files[s.ConfigMap.Key]
		if !ok {
			return fmt.Errorf("%s: ConfigMap %s key %q: no generated input of that name", ib.Name, s.ConfigMap.Name, s.ConfigMap.Key)
		}
		cm := byName[s.ConfigMap.Name]
		if cm == nil {
			cm = &corev1.ConfigMap{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
				ObjectMeta: metav1.ObjectMeta{Name: s.ConfigMap.Name, Namespace: namespace},
				BinaryData: map[string][]byte{},
			}
			byName[cm.Name] = cm
			names = append(names, cm.Name)
		}
		cm.BinaryData[s.ConfigMap.Key] = data
		return nil
	}
	for _, ib := range builds {
		for _, s := range ib.Spec.AllSources() {
			if err := add(ib, s); err != nil {
				return nil, err
			}
		}
	}
	out := make([]*corev1.ConfigMap, 0, len(names))
	for _, n := range names {
		out = append(out, byName[n])
	}
	return out, nil
}
