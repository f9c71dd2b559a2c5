package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/api/v1alpha1/validation"
	"github.com/kiln-build/kiln/internal/engine"
)

// documents are the objects read from -f files: ImageBuilds and the
// ConfigMaps/Secrets they may reference, grouped by namespace.
type documents struct {
	builds []*kilnv1.ImageBuild
	// inputs per namespace, exactly as the controller would resolve them.
	inputs map[string]engine.Inputs
}

// readFiles parses every YAML/JSON document of the files ("-" is stdin).
func readFiles(paths []string, stdin io.Reader) (*documents, error) {
	docs := &documents{inputs: map[string]engine.Inputs{}}
	for _, p := range paths {
		if err := docs.readFile(p, stdin); err != nil {
			return nil, err
		}
	}
	if len(docs.builds) == 0 {
		return nil, fmt.Errorf("no ImageBuild found in %v", paths)
	}
	return docs, nil
}

func (d *documents) readFile(path string, stdin io.Reader) error {
	var r io.Reader
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 0; ; i++ {
		raw, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s document %d: %w", path, i, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		if err := d.add(raw); err != nil {
			return fmt.Errorf("%s document %d: %w", path, i, err)
		}
	}
}

func (d *documents) add(raw []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return fmt.Errorf("parsing: %w", err)
	}
	switch {
	case tm.Kind == "ImageBuild" && tm.APIVersion == kilnv1.GroupVersion.String():
		ib := &kilnv1.ImageBuild{}
		if err := yaml.UnmarshalStrict(raw, ib); err != nil {
			return fmt.Errorf("parsing ImageBuild: %w", err)
		}
		ib.Namespace = namespaceOr(ib.Namespace)
		if err := validateImageBuild(raw, ib.Namespace); err != nil {
			return err
		}
		d.builds = append(d.builds, ib)
	case tm.Kind == "ConfigMap" && tm.APIVersion == "v1":
		cm := &corev1.ConfigMap{}
		if err := yaml.Unmarshal(raw, cm); err != nil {
			return fmt.Errorf("parsing ConfigMap: %w", err)
		}
		in := d.inputsOf(namespaceOr(cm.Namespace))
		in.ConfigMaps[cm.Name] = engine.ConfigMapData(cm)
	case tm.Kind == "Secret" && tm.APIVersion == "v1":
		s := &corev1.Secret{}
		if err := yaml.Unmarshal(raw, s); err != nil {
			return fmt.Errorf("parsing Secret: %w", err)
		}
		in := d.inputsOf(namespaceOr(s.Namespace))
		in.Secrets[s.Name] = engine.SecretData(s)
	case tm.Kind == "List":
		return d.addList(raw)
	default:
		return fmt.Errorf("unsupported kind %q (apiVersion %q): kiln reads ImageBuild, ConfigMap and Secret documents", tm.Kind, tm.APIVersion)
	}
	return nil
}

// validateImageBuild refuses what the API server would refuse if the
// document were applied to a cluster, with its message. It checks the
// document as written, not the decoded struct: omitempty would hide fields
// the server sees (an empty base.image, say).
func validateImageBuild(raw []byte, namespace string) error {
	v, err := validation.Default()
	if err != nil {
		return fmt.Errorf("loading the ImageBuild schema: %w", err)
	}
	data, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("parsing ImageBuild: %w", err)
	}
	obj := map[string]any{}
	// util/json keeps integers int64, as the API server decodes them.
	if err := json.Unmarshal(data, &obj); err != nil {
		return fmt.Errorf("parsing ImageBuild: %w", err)
	}
	// The server takes the namespace from the request; kiln defaults it.
	if meta, ok := obj["metadata"].(map[string]any); ok {
		meta["namespace"] = namespace
	}
	return v.ValidateObject(context.Background(), obj)
}

func (d *documents) addList(raw []byte) error {
	var list struct {
		Items []map[string]any `json:"items"`
	}
	if err := yaml.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("parsing List: %w", err)
	}
	for i, item := range list.Items {
		b, err := yaml.Marshal(item)
		if err != nil {
			return fmt.Errorf("list item %d: %w", i, err)
		}
		if err := d.add(b); err != nil {
			return fmt.Errorf("list item %d: %w", i, err)
		}
	}
	return nil
}

func (d *documents) inputsOf(ns string) engine.Inputs {
	in, ok := d.inputs[ns]
	if !ok {
		in = engine.Inputs{ConfigMaps: map[string]map[string][]byte{}, Secrets: map[string]map[string][]byte{}}
		d.inputs[ns] = in
	}
	return in
}

func namespaceOr(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}
