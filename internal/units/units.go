// Package units formats quantities for people: limits in error messages,
// sizes in kiln build's progress and the demo's tables.
package units

import "strconv"

// Bytes formats n in binary units: "1023 B", "1.5 KiB", "256 MiB". A whole
// number of units is shown without a decimal, anything else with one, so
// that "4.0 GiB" (just under 4 GiB, rounded) is never mistaken for an exact
// limit such as "4 GiB".
func Bytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, i := int64(1024), 0
	for ; i < len(units)-1 && (n/div >= 1024 || n/div <= -1024); i++ {
		div *= 1024
	}
	unit := " " + units[i:i+1] + "iB"
	if n%div == 0 { // exact in integers: a float64 would round 2^63-1 to 2^63
		return strconv.FormatInt(n/div, 10) + unit
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + unit
}
