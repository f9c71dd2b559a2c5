package attest

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"testing"
)

// jsonSchema is a validator for exactly the JSON Schema (draft-07) keywords
// testdata/spdx-schema.json uses: type, properties, required, enum, items,
// minItems and additionalProperties (only ever false there), plus the
// annotations $schema, $id, title and description. The file has no $ref,
// pattern, format, oneOf or conditionals. Any other keyword fails the test
// (unsupported), so a newer schema file cannot be half-checked silently.
type jsonSchema map[string]any

var annotationKeywords = map[string]bool{"$schema": true, "$id": true, "title": true, "description": true}

func loadSPDXSchema(t *testing.T) jsonSchema {
	t.Helper()
	raw, err := os.ReadFile("testdata/spdx-schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s jsonSchema
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// validate returns every violation of s by v (decoded with UseNumber), each
// naming its JSON path.
func (s jsonSchema) validate(v any, path string) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		arg := s[k]
		switch k {
		case "type":
			if !hasType(v, arg.(string)) {
				fail("is %T, want %s", v, arg)
			}
		case "enum":
			found := false
			for _, e := range arg.([]any) {
				if reflect.DeepEqual(e, v) {
					found = true
				}
			}
			if !found {
				fail("%v is not one of %v", v, arg)
			}
		case "required":
			if obj, ok := v.(map[string]any); ok {
				for _, r := range arg.([]any) {
					if _, ok := obj[r.(string)]; !ok {
						fail("required property %q missing", r)
					}
				}
			}
		case "properties":
			obj, ok := v.(map[string]any)
			if !ok {
				continue
			}
			props := arg.(map[string]any)
			for name, val := range obj {
				if ps, ok := props[name]; ok {
					errs = append(errs, jsonSchema(ps.(map[string]any)).validate(val, path+"."+name)...)
				}
			}
		case "additionalProperties":
			obj, ok := v.(map[string]any)
			if !ok {
				continue
			}
			if arg != false {
				panic(fmt.Sprintf("%s: additionalProperties %v: the validator supports false only", path, arg))
			}
			props, _ := s["properties"].(map[string]any)
			for name := range obj {
				if _, ok := props[name]; !ok {
					fail("property %q is not allowed", name)
				}
			}
		case "items":
			if arr, ok := v.([]any); ok {
				for i, e := range arr {
					errs = append(errs, jsonSchema(arg.(map[string]any)).validate(e, fmt.Sprintf("%s[%d]", path, i))...)
				}
			}
		case "minItems":
			if arr, ok := v.([]any); ok {
				if n, _ := arg.(float64); float64(len(arr)) < n {
					fail("has %d items, want at least %v", len(arr), n)
				}
			}
		default:
			if !annotationKeywords[k] {
				panic(fmt.Sprintf("%s: schema keyword %q is not supported by this validator", path, k))
			}
		}
	}
	return errs
}

func hasType(v any, typ string) bool {
	switch typ {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := n.Int64()
		return err == nil
	case "number":
		_, ok := v.(json.Number)
		return ok
	}
	panic("unsupported type " + typ)
}

// TestValidatorCatches: the validator itself rejects what the schema
// forbids, so a passing SBOM test means something.
func TestValidatorCatches(t *testing.T) {
	s := loadSPDXSchema(t)
	valid := `{"SPDXID":"SPDXRef-DOCUMENT","spdxVersion":"SPDX-2.3","name":"x","dataLicense":"CC0-1.0",
		"creationInfo":{"created":"1970-01-01T00:00:00Z","creators":["Tool: t"]}}`
	for _, tc := range []struct {
		name, doc string
		bad       bool
	}{
		{"minimal document", valid, false},
		{"missing creationInfo", `{"SPDXID":"SPDXRef-DOCUMENT","spdxVersion":"SPDX-2.3","name":"x","dataLicense":"CC0-1.0"}`, true},
		{"unknown property", `{"SPDXID":"SPDXRef-DOCUMENT","spdxVersion":"SPDX-2.3","name":"x","dataLicense":"CC0-1.0",
			"creationInfo":{"created":"1970-01-01T00:00:00Z","creators":["Tool: t"],"clock":"now"}}`, true},
		{"bad checksum algorithm", `{"SPDXID":"SPDXRef-DOCUMENT","spdxVersion":"SPDX-2.3","name":"x","dataLicense":"CC0-1.0",
			"creationInfo":{"created":"1970-01-01T00:00:00Z","creators":["Tool: t"]},
			"files":[{"SPDXID":"SPDXRef-F","fileName":"./a","checksums":[{"algorithm":"sha256","checksumValue":"00"}]}]}`, true},
		{"wrong type", `{"SPDXID":"SPDXRef-DOCUMENT","spdxVersion":"SPDX-2.3","name":"x","dataLicense":"CC0-1.0",
			"creationInfo":{"created":"1970-01-01T00:00:00Z","creators":"Tool: t"}}`, true},
		{"empty creators", `{"SPDXID":"SPDXRef-DOCUMENT","spdxVersion":"SPDX-2.3","name":"x","dataLicense":"CC0-1.0",
			"creationInfo":{"created":"1970-01-01T00:00:00Z","creators":[]}}`, true},
	} {
		errs := s.validate(decode(t, []byte(tc.doc)), "$")
		if (len(errs) > 0) != tc.bad {
			t.Errorf("%s: violations %q, want bad=%v", tc.name, errs, tc.bad)
		}
	}
}

func decode(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	dec := json.NewDecoder(bytesReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, raw)
	}
	return v
}
