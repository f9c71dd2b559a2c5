package image

import (
	"fmt"
	"strings"

	"github.com/kiln-build/kiln/internal/failure"
)

// EnvVar is one variable of the image config's env, set in spec order.
type EnvVar struct {
	Name, Value string
}

// mergeEnv applies spec variables to the base env ("NAME=value" entries) the
// way one Dockerfile ENV instruction does: every value is expanded against
// the base env (not against variables set by the same spec), a name already
// present is replaced in place, new names are appended in spec order.
func mergeEnv(base []string, vars []EnvVar) ([]string, error) {
	lookup := envMap(base)
	out := append([]string(nil), base...)
	index := map[string]int{}
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		index[k] = i
	}
	for _, v := range vars {
		if v.Name == "" || strings.Contains(v.Name, "=") {
			return nil, failure.Permanentf(failure.InvalidSpec, "env %q: a name must be non-empty and must not contain '='", v.Name)
		}
		val, err := expand(v.Value, lookup)
		if err != nil {
			return nil, failure.Permanentf(failure.InvalidSpec, "env %s: %v", v.Name, err)
		}
		entry := v.Name + "=" + val
		if i, ok := index[v.Name]; ok {
			out[i] = entry
			continue
		}
		index[v.Name] = len(out)
		out = append(out, entry)
	}
	return out, nil
}

func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// expand substitutes $VAR, ${VAR}, ${VAR:-word} and ${VAR:+word} as the
// Dockerfile does; unknown variables expand to "". A backslash escapes a
// dollar sign ("\$HOME" is literal); a "$" not followed by a name is kept.
func expand(s string, env map[string]string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && s[i+1] == '$':
			b.WriteByte('$')
			i++
		case c == '$' && i+1 < len(s) && s[i+1] == '{':
			end := closingBrace(s[i+2:])
			if end < 0 {
				return "", fmt.Errorf("missing '}' in %q", s)
			}
			val, err := expandBraced(s[i+2:i+2+end], env)
			if err != nil {
				return "", err
			}
			b.WriteString(val)
			i += 2 + end
		case c == '$' && i+1 < len(s) && isNameStart(s[i+1]):
			j := i + 1
			for j < len(s) && isNameChar(s[j]) {
				j++
			}
			b.WriteString(env[s[i+1:j]])
			i = j - 1
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// expandBraced expands the inside of ${...}.
func expandBraced(inner string, env map[string]string) (string, error) {
	name, mod, word := inner, "", ""
	if i := strings.Index(inner, ":"); i >= 0 {
		name, mod = inner[:i], inner[i:]
		if len(mod) < 2 || (mod[1] != '-' && mod[1] != '+') {
			return "", fmt.Errorf("unsupported modifier in ${%s} (want ${VAR}, ${VAR:-default} or ${VAR:+alternative})", inner)
		}
		mod, word = mod[:2], mod[2:]
	}
	if !validName(name) {
		return "", fmt.Errorf("bad variable name in ${%s}", inner)
	}
	val, set := env[name]
	switch mod {
	case ":-":
		if !set || val == "" {
			return expand(word, env)
		}
	case ":+":
		if set && val != "" {
			return expand(word, env)
		}
		return "", nil
	}
	return val, nil
}

func validName(s string) bool {
	if s == "" || !isNameStart(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isNameChar(s[i]) {
			return false
		}
	}
	return true
}

func isNameStart(c byte) bool { return c == '_' || (c|0x20) >= 'a' && (c|0x20) <= 'z' }
func isNameChar(c byte) bool  { return isNameStart(c) || c >= '0' && c <= '9' }

// closingBrace returns the index of the '}' closing a "${" whose inside
// starts s, allowing nested ${...} in a default word; -1 when unterminated.
func closingBrace(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '$' && i+1 < len(s) && s[i+1] == '{':
			depth++
			i++
		case s[i] == '}':
			if depth == 0 {
				return i
			}
			depth--
		}
	}
	return -1
}
