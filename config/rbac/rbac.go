// Package rbac reads the manifests of this directory the way `kustomize build
// config/rbac` renders them (the resources kustomization.yaml lists, in that
// order), so that tests can check exactly what kiln is granted. Only tests
// import it.
package rbac

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

//go:embed *.yaml
var manifests embed.FS

// Objects returns every object of the kustomization's resources.
func Objects() ([]*unstructured.Unstructured, error) {
	var k struct {
		Resources []string `json:"resources"`
	}
	data, err := manifests.ReadFile("kustomization.yaml")
	if err != nil {
		return nil, fmt.Errorf("reading kustomization.yaml: %w", err)
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("parsing kustomization.yaml: %w", err)
	}
	var objs []*unstructured.Unstructured
	for _, name := range k.Resources {
		more, err := readObjects(name)
		if err != nil {
			return nil, err
		}
		objs = append(objs, more...)
	}
	return objs, nil
}

func readObjects(name string) ([]*unstructured.Unstructured, error) {
	data, err := manifests.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading resource %s: %w", name, err)
	}
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", name, i, err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("%s document %d: %w", name, i, err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}
