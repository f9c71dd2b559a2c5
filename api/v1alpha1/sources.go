package v1alpha1

// AllSources returns every source the spec names, in spec order: each
// layer's source or variants' sources, spec.base's archive and each
// platform's base archive. Whoever resolves a spec's references (the
// controller's ConfigMap/Secret reads and watches) walks this list, so a
// source kind or a place for sources added later is found everywhere at once.
func (s *ImageBuildSpec) AllSources() []*Source {
	var out []*Source
	for i := range s.Layers {
		l := &s.Layers[i]
		if l.Source != nil {
			out = append(out, l.Source)
		}
		for j := range l.Variants {
			out = append(out, &l.Variants[j].Source)
		}
	}
	if s.Base != nil && s.Base.Archive != nil {
		out = append(out, &s.Base.Archive.Source)
	}
	for i := range s.Platforms {
		if b := s.Platforms[i].Base; b != nil && b.Archive != nil {
			out = append(out, &b.Archive.Source)
		}
	}
	return out
}
