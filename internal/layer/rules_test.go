package layer

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/failure"
)

// ruleCase is bad input for one of the entry rules, rejected the same way
// in minimal and reproducible mode.
type ruleCase struct {
	name    string
	in      []byte
	windows bool
	wantErr string
}

func runRuleCases(t *testing.T, cases []ruleCase) {
	t.Helper()
	for _, tc := range cases {
		for _, mode := range []Mode{Minimal, Reproducible} {
			t.Run(tc.name+"/"+string(mode), func(t *testing.T) {
				_, _, err := normalize(t, tc.in, Options{Mode: mode, Windows: tc.windows, LayerName: "app"})
				if err == nil {
					t.Fatalf("want error %q, got none", tc.wantErr)
				}
				if want := `layer "app": ` + tc.wantErr; !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not contain %q", err, want)
				}
				if !failure.IsPermanent(err) || failure.ReasonOf(err) != failure.InvalidLayer {
					t.Fatalf("error %q: want permanent InvalidLayer, got %s", err, failure.ReasonOf(err))
				}
			})
		}
	}
}

// acceptCase is input the rules must keep accepting, byte for byte in
// minimal mode.
type acceptCase struct {
	name    string
	in      []byte
	windows bool
}

func runAcceptCases(t *testing.T, cases []acceptCase) {
	t.Helper()
	for _, tc := range cases {
		for _, mode := range []Mode{Minimal, Reproducible} {
			t.Run(tc.name+"/"+string(mode), func(t *testing.T) {
				opts := Options{Mode: mode, Windows: tc.windows}
				out, st, err := normalize(t, tc.in, opts)
				if err != nil {
					t.Fatal(err)
				}
				if mode == Minimal && !tc.windows && (st.Changed || !bytes.Equal(out, tc.in)) {
					t.Errorf("minimal mode changed a clean input: %v", st.Changes)
				}
				listTar(t, out)
				assertIdempotent(t, out, opts)
			})
		}
	}
}
