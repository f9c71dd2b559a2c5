// Package image embeds kiln.yaml, the ImageBuild that `make image` builds
// kiln's own image from, and fills in its ${NAME} values. hack/image uses it;
// its test checks that the rendered document passes the same validation as
// `kiln build -f` (the CRD's schema and rules).
package image

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
)

//go:embed kiln.yaml
var template []byte

// Values are the ${NAME} values of kiln.yaml, by name.
type Values map[string]string

// placeholder is ${NAME} with an upper-case name; other "${" text (the
// file's comments) is left alone.
var placeholder = regexp.MustCompile(`\$\{([A-Z][A-Z0-9_]*)\}`)

// Names lists the placeholders of kiln.yaml, sorted, each once.
func Names() []string {
	var names []string
	for _, m := range placeholder.FindAllSubmatch(template, -1) {
		names = append(names, string(m[1]))
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// Render returns kiln.yaml with every placeholder replaced by its value as a
// double-quoted string (JSON string syntax is YAML's), so that a value is
// always a string and cannot change the document's structure, whatever it
// contains: a revision of digits only, a version "1e10", a colon. A
// placeholder without a value, an empty value and a value for no
// placeholder are errors: each means the caller and the file disagree.
func Render(v Values) ([]byte, error) {
	names := Names()
	for _, n := range names {
		if v[n] == "" {
			return nil, fmt.Errorf("rendering config/image/kiln.yaml: no value for ${%s}", n)
		}
	}
	for n := range v {
		if !slices.Contains(names, n) {
			return nil, fmt.Errorf("rendering config/image/kiln.yaml: a value for %s, which the file does not use (it uses %v)", n, names)
		}
	}
	return placeholder.ReplaceAllFunc(template, func(m []byte) []byte {
		q, _ := json.Marshal(v[string(m[2:len(m)-1])]) // a string always marshals
		return q
	}), nil
}
