// Package version holds the build's version, set at link time with
// -ldflags "-X github.com/kiln-build/kiln/internal/version.Version=...".
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"time"
)

// Version is the release version; "dev" for untagged builds.
var Version = "dev"

// Engine identifies the build engine's semantics. It is part of every
// inputDigest: bump it whenever the same inputs would produce different bytes
// (normalization rules, encoder parameters, config assembly), so that
// upgraded controllers rebuild instead of trusting old digests.
const Engine = "kiln-engine/2"

// Epoch is the default image creation time and the default mtime clamp of
// reproducible layers: a build never reads the clock, so the same spec
// always gives the same digest. It lives here, beside Engine, because it is
// part of the same promise and every layer of the engine needs it.
var Epoch = time.Unix(0, 0).UTC()

// String is the one-line version report of `kiln version`.
func String() string {
	commit := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	return fmt.Sprintf("kiln %s (engine %s, commit %s, %s %s/%s)", Version, Engine, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
