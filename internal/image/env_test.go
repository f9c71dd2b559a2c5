package image

import (
	"strings"
	"testing"
)

func TestMergeEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin:/bin", "HOME=/root", "LANG=C"}
	tests := []struct {
		name    string
		vars    []EnvVar
		want    []string
		wantErr string
	}{
		{"no vars keeps base", nil, base, ""},
		{"replace in place", []EnvVar{{Name: "HOME", Value: "/app"}},
			[]string{"PATH=/usr/bin:/bin", "HOME=/app", "LANG=C"}, ""},
		{"append new", []EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}},
			[]string{"PATH=/usr/bin:/bin", "HOME=/root", "LANG=C", "A=1", "B=2"}, ""},
		{"$VAR", []EnvVar{{Name: "PATH", Value: "/app/bin:$PATH"}},
			[]string{"PATH=/app/bin:/usr/bin:/bin", "HOME=/root", "LANG=C"}, ""},
		{"${VAR}", []EnvVar{{Name: "X", Value: "${HOME}x"}},
			append(append([]string{}, base...), "X=/rootx"), ""},
		{"unknown is empty", []EnvVar{{Name: "X", Value: "a${NOPE}b$NOPE"}},
			append(append([]string{}, base...), "X=ab"), ""},
		{"expands against base, not spec", []EnvVar{{Name: "HOME", Value: "/app"}, {Name: "X", Value: "$HOME"}},
			[]string{"PATH=/usr/bin:/bin", "HOME=/app", "LANG=C", "X=/root"}, ""},
		{"escaped dollar", []EnvVar{{Name: "X", Value: `\$HOME $ 5$`}},
			append(append([]string{}, base...), "X=$HOME $ 5$"), ""},
		{"default and alternative", []EnvVar{{Name: "X", Value: "${NOPE:-d}|${HOME:-d}|${HOME:+alt}|${NOPE:+alt}|${NOPE:-${LANG}}"}},
			append(append([]string{}, base...), "X=d|/root|alt||C"), ""},
		{"unterminated", []EnvVar{{Name: "X", Value: "${HOME"}}, nil, `env X: missing '}'`},
		{"bad modifier", []EnvVar{{Name: "X", Value: "${HOME:?x}"}}, nil, "unsupported modifier"},
		{"bad name", []EnvVar{{Name: "A=B", Value: "x"}}, nil, `env "A=B"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mergeEnv(base, tt.vars)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}
