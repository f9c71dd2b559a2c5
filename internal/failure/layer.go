package failure

import (
	"errors"
	"fmt"
)

// LayerError is an error of one layer of a build. Its message is
// `layer "<name>": ` followed by Err's, the form layer errors have always
// had; carrying the name as a value lets the engine name a layer exactly
// once without reading messages (see InLayer).
type LayerError struct {
	Layer string
	Err   error
}

func (e *LayerError) Error() string { return fmt.Sprintf("layer %q: %v", e.Layer, e.Err) }
func (e *LayerError) Unwrap() error { return e.Err }

// Layerf returns a LayerError of layer with the formatted error (%w wraps).
func Layerf(layer, format string, args ...any) error {
	return &LayerError{Layer: layer, Err: fmt.Errorf(format, args...)}
}

// InLayer names layer in err unless err already carries a LayerError of
// that layer; an error of another layer (a shared fetch started by a layer
// of another build) is named once more. A nil err stays nil.
func InLayer(layer string, err error) error {
	var le *LayerError
	if err == nil || (errors.As(err, &le) && le.Layer == layer) {
		return err
	}
	return &LayerError{Layer: layer, Err: err}
}
