package controllers

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
)

// pullSecretKeychain resolves registry credentials from the imagePullSecrets
// of a ServiceAccount, the way the kubelet does: a key of .dockerconfigjson
// ("auths") or the legacy .dockercfg matches a registry host, optionally with
// a repository path prefix; the most specific match wins. It exists because
// go-containerregistry's pkg/authn/kubernetes is a separate module.
type pullSecretKeychain struct {
	entries []credential // most specific first
}

type credential struct {
	host string // registry host[:port], lower case
	path string // repository prefix, "" for the whole registry
	auth authn.AuthConfig
}

// dockerHubAliases are the names users write for Docker Hub in config files;
// go-containerregistry calls it index.docker.io.
var dockerHubAliases = map[string]string{
	"docker.io":               name.DefaultRegistry,
	"registry-1.docker.io":    name.DefaultRegistry,
	"registry.hub.docker.com": name.DefaultRegistry,
}

// newPullSecretKeychain parses the Secrets in order; an unparsable Secret is
// an error naming it, because silently falling back to anonymous turns a typo
// into a confusing 401 later.
func newPullSecretKeychain(secrets []corev1.Secret) (*pullSecretKeychain, error) {
	kc := &pullSecretKeychain{}
	for i := range secrets {
		auths, err := dockerAuths(&secrets[i])
		if err != nil {
			return nil, fmt.Errorf("pull secret %q: %w", secrets[i].Name, err)
		}
		for key, a := range auths {
			host, path := splitAuthKey(key)
			if host == "" {
				continue
			}
			kc.entries = append(kc.entries, credential{host: host, path: path, auth: a})
		}
	}
	// Longer paths first; among equals keep Secret order (the first Secret
	// listed on the ServiceAccount wins, as with the kubelet).
	sort.SliceStable(kc.entries, func(i, j int) bool {
		return len(kc.entries[i].path) > len(kc.entries[j].path)
	})
	return kc, nil
}

// dockerAuths returns the host -> credentials map of a pull secret.
func dockerAuths(s *corev1.Secret) (map[string]authn.AuthConfig, error) {
	if b, ok := s.Data[corev1.DockerConfigJsonKey]; ok {
		var cfg struct {
			Auths map[string]authn.AuthConfig `json:"auths"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", corev1.DockerConfigJsonKey, err)
		}
		return cfg.Auths, nil
	}
	if b, ok := s.Data[corev1.DockerConfigKey]; ok {
		var auths map[string]authn.AuthConfig
		if err := json.Unmarshal(b, &auths); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", corev1.DockerConfigKey, err)
		}
		return auths, nil
	}
	return nil, fmt.Errorf("has neither %s nor %s", corev1.DockerConfigJsonKey, corev1.DockerConfigKey)
}

// splitAuthKey turns "https://host:5000/v1/", "host/team" or "host" into
// host and repository prefix.
func splitAuthKey(key string) (host, path string) {
	key = strings.TrimSpace(key)
	if strings.Contains(key, "://") {
		if u, err := url.Parse(key); err == nil {
			key = u.Host + u.Path
		}
	}
	host, path, _ = strings.Cut(key, "/")
	host = strings.ToLower(host)
	if alias, ok := dockerHubAliases[host]; ok {
		host = alias
	}
	if host == "index.docker.io" && (path == "v1" || path == "v1/" || path == "v2" || path == "v2/") {
		path = ""
	}
	return host, strings.Trim(path, "/")
}

// Resolve implements authn.Keychain. No match is anonymous access, never
// the manager's own credentials.
func (k *pullSecretKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	host := strings.ToLower(r.RegistryStr())
	repo := repositoryOf(r)
	for _, c := range k.entries {
		if c.host != host {
			continue
		}
		if c.path == "" || repo == c.path || strings.HasPrefix(repo, c.path+"/") {
			return authn.FromConfig(c.auth), nil
		}
	}
	return authn.Anonymous, nil
}

// repositoryOf returns the repository path of r (without the registry), or
// "" when r names a whole registry.
func repositoryOf(r authn.Resource) string {
	if repo, ok := r.(name.Repository); ok {
		return repo.RepositoryStr()
	}
	_, path, _ := strings.Cut(r.String(), "/")
	return path
}
