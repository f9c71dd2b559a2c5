package cli

import (
	"fmt"
	"os"
	"strings"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/engine"
)

// localSources are the --source NAME=DIR flags: a directory standing in
// for the artifact of every sourceRef named NAME (whatever its kind), read
// into the same deterministic layer as the artifact of a checkout of the
// same files, so CI builds the layer the cluster builds.
type localSources map[string]string

// parseSources reads NAME=DIR values; DIR must be a directory.
func parseSources(values []string) (localSources, error) {
	out := localSources{}
	for _, v := range values {
		name, dir, ok := strings.Cut(v, "=")
		if !ok || name == "" || dir == "" {
			return nil, fmt.Errorf("--source %q: want NAME=DIR (the sourceRef name and a local directory)", v)
		}
		if prev, dup := out[name]; dup && prev != dir {
			return nil, fmt.Errorf("--source %s given twice (%s and %s)", name, prev, dir)
		}
		st, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("--source %s: %w", name, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("--source %s: %s is not a directory", name, dir)
		}
		out[name] = dir
	}
	return out, nil
}

// check says which sourceRef of the builds has no --source, and which
// --source names no sourceRef (a typo would otherwise go unnoticed).
func (s localSources) check(builds []*kilnv1.ImageBuild) error {
	used := map[string]bool{}
	for _, ib := range builds {
		for _, ref := range ib.Spec.SourceRefs() {
			if _, ok := s[ref.Name]; !ok {
				return fmt.Errorf("ImageBuild %s/%s: sourceRef %s needs --source %s=DIR: kiln build reads a local directory in place of the Flux source's artifact",
					namespaceOr(ib.Namespace), ib.Name, ref, ref.Name)
			}
			used[ref.Name] = true
		}
	}
	for name := range s {
		if !used[name] {
			return fmt.Errorf("--source %s: no ImageBuild has a sourceRef named %q", name, name)
		}
	}
	return nil
}

// artifacts are the engine inputs for ib's sourceRefs.
func (s localSources) artifacts(ib *kilnv1.ImageBuild) map[string]engine.Artifact {
	refs := ib.Spec.SourceRefs()
	if len(refs) == 0 {
		return nil
	}
	out := make(map[string]engine.Artifact, len(refs))
	for _, ref := range refs {
		out[engine.ArtifactKey(ref)] = engine.Artifact{Dir: s[ref.Name]}
	}
	return out
}
