//go:build race

package compression

// The race detector slows klauspost's encoders about tenfold; 4 MiB is still
// four gzip blocks in flight on two workers, which is what the race detector
// needs to see.
const determinismSize = 4 << 20
