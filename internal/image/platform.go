package image

import (
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/failure"
)

// DefaultPlatform is used when a spec gives none.
var DefaultPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// ParsePlatform parses "os/arch[/variant][:osversion]"; "" is linux/amd64.
// The os.version suffix is only meaningful for Windows, where it selects the
// child of an index by prefix (e.g. "windows/amd64:10.0.20348").
func ParsePlatform(s string) (v1.Platform, error) {
	if s == "" {
		return DefaultPlatform, nil
	}
	spec, osVersion, hasVersion := strings.Cut(s, ":")
	if hasVersion && !validOSVersion(osVersion) {
		return v1.Platform{}, failure.Permanentf(failure.InvalidSpec,
			"platform %q: os.version %q must be digits and dots, e.g. 10.0.20348", s, osVersion)
	}
	parts := strings.Split(spec, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return v1.Platform{}, failure.Permanentf(failure.InvalidSpec,
			"platform %q: want os/arch[/variant][:os.version], e.g. linux/arm64/v8", s)
	}
	for _, p := range parts {
		if !validPlatformWord(p) {
			return v1.Platform{}, failure.Permanentf(failure.InvalidSpec,
				"platform %q: %q is not a lower-case os, architecture or variant name", s, p)
		}
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1], OSVersion: osVersion}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

func validPlatformWord(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func validOSVersion(s string) bool {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return true
}

// formatPlatform renders p as os/arch[/variant][:os.version] for messages.
func formatPlatform(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	if p.OSVersion != "" {
		s += ":" + p.OSVersion
	}
	return s
}

// platformMatches reports whether have (of an index child or an image
// config) satisfies want. A variant is compared only when want names one,
// except that arm64 treats "" and "v8" alike (registries list both). An
// os.version in want matches by prefix, the way Windows hosts pick images.
func platformMatches(want, have v1.Platform) bool {
	if want.OS != have.OS || want.Architecture != have.Architecture {
		return false
	}
	if want.Variant != "" && normVariant(want) != normVariant(have) {
		return false
	}
	if want.OSVersion != "" && !osVersionHasPrefix(have.OSVersion, want.OSVersion) {
		return false
	}
	return true
}

func normVariant(p v1.Platform) string {
	if p.Architecture == "arm64" && p.Variant == "" {
		return "v8"
	}
	return p.Variant
}

// osVersionHasPrefix matches whole dot-separated components: "10.0.2" must
// not select "10.0.20348.1".
func osVersionHasPrefix(have, prefix string) bool {
	if !strings.HasPrefix(have, prefix) {
		return false
	}
	return len(have) == len(prefix) || have[len(prefix)] == '.' || strings.HasSuffix(prefix, ".")
}

// platformOf returns the platform recorded in an image config.
func platformOf(cf *v1.ConfigFile) v1.Platform {
	return v1.Platform{
		OS:           cf.OS,
		Architecture: cf.Architecture,
		Variant:      cf.Variant,
		OSVersion:    cf.OSVersion,
		OSFeatures:   cf.OSFeatures,
	}
}
