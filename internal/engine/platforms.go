package engine

import (
	"fmt"
	"maps"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/image"
)

// child is one image of a build: the whole build for a spec without
// platforms, one per spec.platforms entry otherwise. Its spec is a
// single-platform spec (no platforms, no variants, base.platform set), so
// that every child is built by exactly the code that builds a
// single-platform ImageBuild: a one-platform index child has the digest of
// the same spec without platforms.
type child struct {
	// requested is the spec.platforms entry ("" for a single image).
	requested string
	platform  v1.Platform
	spec      *kilnv1.ImageBuildSpec
}

// childrenOf splits spec into its children. For a spec without platforms
// it is the spec itself.
func childrenOf(spec *kilnv1.ImageBuildSpec) ([]child, error) {
	if len(spec.Platforms) == 0 {
		p, err := image.ParsePlatform(platform(spec))
		if err != nil {
			return nil, failure.Permanent(failure.InvalidSpec, fmt.Errorf("base.platform: %w", err))
		}
		return []child{{platform: p, spec: spec}}, nil
	}
	if err := checkPlatforms(spec.Platforms); err != nil {
		return nil, err
	}
	out := make([]child, 0, len(spec.Platforms))
	for i := range spec.Platforms {
		c, err := childOf(spec, &spec.Platforms[i])
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// checkPlatforms rejects two entries that name the same platform in
// different words (linux/arm64 and linux/arm64/v8): the schema only sees
// that the strings differ, and the index would hold two images that any
// client treats as one platform.
func checkPlatforms(ps []kilnv1.PlatformBuild) error {
	parsed := make([]v1.Platform, len(ps))
	for i := range ps {
		p, err := image.ParsePlatform(ps[i].Platform)
		if err != nil {
			return failure.Permanent(failure.InvalidSpec, fmt.Errorf("platforms[%d]: %w", i, err))
		}
		for j := range i {
			if samePlatform(parsed[j], p) {
				return failure.Permanentf(failure.InvalidSpec,
					"platforms %q and %q name the same platform; list it once", ps[j].Platform, ps[i].Platform)
			}
		}
		parsed[i] = p
	}
	return nil
}

// samePlatform is equality with arm64's implied v8 variant.
func samePlatform(a, b v1.Platform) bool {
	return a.OS == b.OS && a.Architecture == b.Architecture && a.OSVersion == b.OSVersion &&
		image.NormalizedVariant(a) == image.NormalizedVariant(b)
}

// childOf is the single-platform spec of one platform: its base (the
// platform's own or spec.base, with base.platform set to it), spec.config
// with the platform's config laid over it, and the layers that apply to it
// with their variant resolved.
func childOf(spec *kilnv1.ImageBuildSpec, pb *kilnv1.PlatformBuild) (child, error) {
	p, err := image.ParsePlatform(pb.Platform)
	if err != nil {
		return child{}, failure.Permanent(failure.InvalidSpec, fmt.Errorf("platforms: %w", err))
	}
	cs := spec.DeepCopy()
	cs.Platforms = nil
	base := spec.Base
	if pb.Base != nil {
		base = pb.Base
	}
	if base != nil {
		cs.Base = base.DeepCopy()
	} else {
		cs.Base = &kilnv1.Base{}
	}
	cs.Base.Platform = pb.Platform
	if pb.Base != nil && spec.Base != nil {
		// Polling follows spec.base (the schema forbids these on an override).
		cs.Base.PollInterval, cs.Base.UpdatePolicy = spec.Base.PollInterval, spec.Base.UpdatePolicy
	}
	cs.Config = overlayConfig(spec.Config, pb.Config)
	cs.Layers = cs.Layers[:0]
	for i := range spec.Layers {
		l, ok, err := layerFor(&spec.Layers[i], pb.Platform)
		if err != nil {
			return child{}, err
		}
		if ok {
			cs.Layers = append(cs.Layers, l)
		}
	}
	return child{requested: pb.Platform, platform: p, spec: cs}, nil
}

// layerFor returns l as it is built for platform plat, or false when l does
// not apply to it (layers[].platforms).
func layerFor(l *kilnv1.Layer, plat string) (kilnv1.Layer, bool, error) {
	if len(l.Platforms) > 0 && bestMatch(l.Platforms, plat) < 0 {
		return kilnv1.Layer{}, false, nil
	}
	out := *l.DeepCopy()
	out.Platforms = nil
	if len(l.Variants) == 0 {
		if out.Source == nil {
			return kilnv1.Layer{}, false, failure.Permanent(failure.InvalidSpec, failure.Layerf(l.Name, "has neither source nor variants"))
		}
		return out, true, nil
	}
	names := make([]string, len(l.Variants))
	for i := range l.Variants {
		names[i] = l.Variants[i].Platform
	}
	i := bestMatch(names, plat)
	if i < 0 {
		return kilnv1.Layer{}, false, failure.Permanent(failure.InvalidSpec, failure.Layerf(l.Name,
			"has no variant for platform %s (variants: %s); add one or limit the layer with platforms", plat, strings.Join(names, ", ")))
	}
	v := l.Variants[i].DeepCopy()
	out.Variants = nil
	out.Source, out.Digest, out.DiffID, out.Compression = &v.Source, v.Digest, v.DiffID, v.Compression
	return out, true, nil
}

// bestMatch returns the index of the most specific entry of names that
// matches platform plat, or -1. An entry matches when it is plat or a
// prefix of it ending at a component: linux/arm64 matches linux/arm64/v8,
// windows/amd64 and windows/amd64:10.0 match windows/amd64:10.0.20348. The
// longest match is the most specific; two equally long matches would be
// the same string, which the schema forbids within one layer.
func bestMatch(names []string, plat string) int {
	best := -1
	for i, n := range names {
		if !platformPrefix(n, plat) {
			continue
		}
		if best < 0 || len(n) > len(names[best]) {
			best = i
		}
	}
	return best
}

// platformPrefix is the matching rule of variants and layers[].platforms,
// the same one the schema's CEL rules apply (plus os.version components:
// windows/amd64:10.0.2 is not a prefix of windows/amd64:10.0.20348).
func platformPrefix(name, plat string) bool {
	if name == plat {
		return true
	}
	if !strings.HasPrefix(plat, name) {
		return false
	}
	switch rest := plat[len(name):]; {
	case strings.HasPrefix(rest, "/"):
		return !strings.Contains(name, ":")
	case strings.HasPrefix(rest, ":"):
		return true
	case strings.HasPrefix(rest, ".") && strings.Contains(name, ":"):
		return true // windows/amd64:10.0 matches windows/amd64:10.0.20348
	}
	return false
}

// overlayConfig lays a platform's config over spec.config: every field it
// sets replaces spec.config's, env and labels are merged by name with the
// platform's values winning.
func overlayConfig(base, over *kilnv1.ImageConfig) *kilnv1.ImageConfig {
	if over == nil {
		return base
	}
	if base == nil {
		return over.DeepCopy()
	}
	out := base.DeepCopy()
	out.Env = mergeEnvVars(out.Env, over.Env)
	if over.Entrypoint != nil {
		out.Entrypoint = over.Entrypoint
		if over.Cmd == nil {
			// Like spec.config itself: a new entrypoint without cmd clears
			// the cmd it would otherwise inherit.
			out.Cmd = nil
		}
	}
	if over.Cmd != nil {
		out.Cmd = over.Cmd
	}
	if over.WorkingDir != "" {
		out.WorkingDir = over.WorkingDir
	}
	if over.User != "" {
		out.User = over.User
	}
	if len(over.Labels) > 0 {
		if out.Labels == nil {
			out.Labels = map[string]string{}
		}
		maps.Copy(out.Labels, over.Labels)
	}
	if over.ExposedPorts != nil {
		out.ExposedPorts = over.ExposedPorts
	}
	if over.Volumes != nil {
		out.Volumes = over.Volumes
	}
	if over.StopSignal != "" {
		out.StopSignal = over.StopSignal
	}
	return out
}

// mergeEnvVars replaces variables of base named in over, in place, and
// appends the others.
func mergeEnvVars(base, over []kilnv1.EnvVar) []kilnv1.EnvVar {
	out := append([]kilnv1.EnvVar(nil), base...)
	for _, v := range over {
		replaced := false
		for i := range out {
			if out[i].Name == v.Name {
				out[i].Value, replaced = v.Value, true
			}
		}
		if !replaced {
			out = append(out, v)
		}
	}
	return out
}
