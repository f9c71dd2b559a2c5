package failure

import (
	"errors"
	"fmt"
	"testing"
)

func TestInLayer(t *testing.T) {
	named := Permanent(InvalidLayer, Layerf("app", "entry %d: %s", 3, "bad"))
	tests := []struct {
		name   string
		layer  string
		err    error
		want   string
		reason Reason
	}{
		{"unnamed gets the name", "app", errors.New("boom"), `layer "app": boom`, Transient},
		{"named stays as is", "app", named, `layer "app": entry 3: bad`, InvalidLayer},
		{"named deeper in the chain", "app", fmt.Errorf("fetching: %w", named), `fetching: layer "app": entry 3: bad`, InvalidLayer},
		{"another layer's error is named again", "web", named, `layer "web": layer "app": entry 3: bad`, InvalidLayer},
		{"classification survives", "app", Transientf("503"), `layer "app": 503`, Transient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := InLayer(tt.layer, tt.err)
			if got.Error() != tt.want {
				t.Errorf("message = %q, want %q", got.Error(), tt.want)
			}
			if ReasonOf(got) != tt.reason || IsPermanent(got) != IsPermanent(tt.err) {
				t.Errorf("reason = %s permanent %v, want %s %v", ReasonOf(got), IsPermanent(got), tt.reason, IsPermanent(tt.err))
			}
			var le *LayerError
			if !errors.As(got, &le) {
				t.Errorf("%v carries no LayerError", got)
			}
		})
	}
	if InLayer("app", nil) != nil {
		t.Error("InLayer(nil) is not nil")
	}
}

func TestLayerfWraps(t *testing.T) {
	cause := errors.New("cause")
	err := Layerf("app", "reading: %w", cause)
	if !errors.Is(err, cause) || err.Error() != `layer "app": reading: cause` {
		t.Errorf("Layerf = %q, wraps cause: %v", err, errors.Is(err, cause))
	}
}
