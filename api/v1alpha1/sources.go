package v1alpha1

import "slices"

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

// Reference is one ConfigMap or Secret key a source reads; Key is AllKeys
// when the source reads every key of the object.
type Reference struct {
	// Kind is "ConfigMap" or "Secret".
	Kind string
	Name string
	Key  string
}

// AllKeys is Reference.Key for a source that reads every key (a
// headersFrom Secret, a configMapDir or secretDir).
const AllKeys = "*"

// References lists the ConfigMap and Secret keys s reads, in field order.
// The controller reads, watches and fingerprints exactly these, so a
// source kind that adds a reference adds it here.
func (s *Source) References() []Reference {
	var out []Reference
	add := func(kind string, sel *KeySelector) {
		if sel != nil {
			out = append(out, Reference{Kind: kind, Name: sel.Name, Key: sel.Key})
		}
	}
	add("ConfigMap", s.ConfigMap)
	add("Secret", s.Secret)
	if s.HeadersFrom != nil {
		out = append(out, Reference{Kind: "Secret", Name: s.HeadersFrom.Name, Key: AllKeys})
	}
	for i := range s.Files {
		add("Secret", s.Files[i].SecretKeyRef)
		add("ConfigMap", s.Files[i].ConfigMapKeyRef)
	}
	if s.ConfigMapDir != nil {
		out = append(out, Reference{Kind: "ConfigMap", Name: s.ConfigMapDir.Name, Key: AllKeys})
	}
	if s.SecretDir != nil {
		out = append(out, Reference{Kind: "Secret", Name: s.SecretDir.Name, Key: AllKeys})
	}
	return out
}

// HoldsSecret reports whether s's bytes may include Secret values (a
// headersFrom Secret is sent, never part of the bytes): then kiln never
// shows their sha256 (status sourceDigest, inputDigest).
func (s *Source) HoldsSecret() bool {
	if s.Secret != nil || s.SecretDir != nil {
		return true
	}
	for i := range s.Files {
		if s.Files[i].SecretKeyRef != nil {
			return true
		}
	}
	return false
}

// Keys of the spec.signing.cosign.keyRef Secret kiln reads.
const (
	CosignKeyKey      = "cosign.key"
	CosignPasswordKey = "cosign.password"
)

// References lists every ConfigMap and Secret key the spec reads: its
// sources' (AllSources), the target's CA bundle and the signing key. The
// controller reads, watches and fingerprints exactly these.
func (s *ImageBuildSpec) References() []Reference {
	var out []Reference
	for _, src := range s.AllSources() {
		out = append(out, src.References()...)
	}
	if cb := s.Target.CABundle; cb != nil {
		if cb.ConfigMap != nil {
			out = append(out, Reference{Kind: "ConfigMap", Name: cb.ConfigMap.Name, Key: cb.ConfigMap.Key})
		}
		if cb.Secret != nil {
			out = append(out, Reference{Kind: "Secret", Name: cb.Secret.Name, Key: cb.Secret.Key})
		}
	}
	if s.Signing != nil && s.Signing.Cosign != nil {
		name := s.Signing.Cosign.KeyRef.Name
		out = append(out, Reference{Kind: "Secret", Name: name, Key: CosignKeyKey},
			Reference{Kind: "Secret", Name: name, Key: CosignPasswordKey})
	}
	return out
}

// SourceRefs lists the Flux sources the spec's sources name (each once, in
// spec order): the controller reads, watches and fingerprints exactly these.
func (s *ImageBuildSpec) SourceRefs() []SourceReference {
	var out []SourceReference
	for _, src := range s.AllSources() {
		if r := src.SourceRef; r != nil && !slices.Contains(out, *r) {
			out = append(out, *r)
		}
	}
	return out
}

// String is "Kind/name".
func (r SourceReference) String() string { return string(r.Kind) + "/" + r.Name }
