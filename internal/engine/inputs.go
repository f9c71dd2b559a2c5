package engine

import corev1 "k8s.io/api/core/v1"

// ConfigMapData merges a ConfigMap's data and binaryData into one key map,
// the way a layer source reads it (a key in either is accepted).
func ConfigMapData(cm *corev1.ConfigMap) map[string][]byte {
	out := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		out[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		out[k] = v
	}
	return out
}

// SecretData returns a Secret's keys. stringData is merged over data as the
// API server does on write, so Secrets read from files behave like stored ones.
func SecretData(s *corev1.Secret) map[string][]byte {
	out := make(map[string][]byte, len(s.Data)+len(s.StringData))
	for k, v := range s.Data {
		out[k] = v
	}
	for k, v := range s.StringData {
		out[k] = []byte(v)
	}
	return out
}
