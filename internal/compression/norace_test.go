//go:build !race

package compression

// determinismSize is the input of TestEncodersAreDeterministic.
const determinismSize = 20 << 20
