package image

import (
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/failure"
)

// DefaultPlatform is what an index (or a multi-image archive) is resolved
// to, and what scratch is, when the spec asks for no platform.
var DefaultPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// ParsePlatform parses "os/arch[/variant][:osversion]". It is stricter than
// v1.ParsePlatform, which trims spaces, ignores a second ':' and accepts
// "linux" alone: a spec value is checked, not guessed at. "" is the zero
// Platform, which means "no requirement": an index resolves it to
// DefaultPlatform and a single image is taken whatever its platform, whereas
// a platform the spec does set must match a single image too
// (checkSinglePlatform). The os.version suffix is only meaningful for
// Windows, where it selects by prefix (e.g. "windows/amd64:10.0.20348").
func ParsePlatform(s string) (v1.Platform, error) {
	if s == "" {
		return v1.Platform{}, nil
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

// formatPlatform renders p for messages as v1.Platform.String does:
// os/arch[/variant][:os.version]. A platform missing its os or architecture
// (a malformed index entry or config; OCI requires both) keeps the gap
// visible as "/amd64" or "linux/", where String would print nothing or
// "linux".
func formatPlatform(p v1.Platform) string {
	if p.OS == "" || p.Architecture == "" {
		return p.OS + "/" + p.Architecture
	}
	return p.String()
}

// requested reports whether the spec asked for a platform at all.
func requested(p v1.Platform) bool { return p.OS != "" || p.Architecture != "" }

// orDefault is the platform an index is resolved for.
func orDefault(p v1.Platform) v1.Platform {
	if !requested(p) {
		return DefaultPlatform
	}
	return p
}

// platformMatches reports whether have (of an index child or an image
// config: one rule for both) satisfies want. Variants are compared only
// when both name one, because image configs often omit it; arm64 treats ""
// as "v8", as containerd and ko do (registries list both). An os.version in
// want matches by prefix, the way Windows hosts pick images.
func platformMatches(want, have v1.Platform) bool {
	if want.OS != have.OS || want.Architecture != have.Architecture {
		return false
	}
	if wv, hv := normVariant(want), normVariant(have); wv != "" && hv != "" && wv != hv {
		return false
	}
	if want.OSVersion != "" && !osVersionHasPrefix(have.OSVersion, want.OSVersion) {
		return false
	}
	return true
}

// NormalizedVariant is p's variant, with arm64's implied "v8" made
// explicit: linux/arm64 and linux/arm64/v8 are one platform.
func NormalizedVariant(p v1.Platform) string { return normVariant(p) }

func normVariant(p v1.Platform) string {
	if p.Architecture == "arm64" && p.Variant == "" {
		return "v8"
	}
	return p.Variant
}

// checkSinglePlatform rejects a single-manifest base (a registry image or a
// one-image archive) whose config platform is not the one the spec asks
// for: building windows-shaped layers on a Linux image, or silently
// producing windows/amd64 when linux/arm64 was asked for, is never wanted.
// A spec without a platform takes the image as it is.
func checkSinglePlatform(base string, want, have v1.Platform) error {
	if !requested(want) || platformMatches(want, have) {
		return nil
	}
	return failure.Permanentf(failure.PlatformNotFound,
		"base %s: base.platform %s does not match the base image's platform %s (it is a single image, not an index; leave base.platform empty to take it as it is)",
		base, formatPlatform(want), formatPlatform(have))
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
