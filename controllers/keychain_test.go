package controllers

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pullSecret(name, key, body string) corev1.Secret {
	return corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{key: []byte(body)}}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestPullSecretKeychain(t *testing.T) {
	secrets := []corev1.Secret{
		pullSecret("json", corev1.DockerConfigJsonKey, `{"auths":{
			"registry.example":{"auth":"`+b64("alice:pw-a")+`"},
			"registry.example/team/private":{"username":"bob","password":"pw-b"},
			"https://index.docker.io/v1/":{"auth":"`+b64("hub:pw-hub")+`"},
			"token.example:5000":{"identitytoken":"tok"}}}`),
		pullSecret("legacy", corev1.DockerConfigKey, `{"https://old.example":{"auth":"`+b64("carol:pw-c")+`"}}`),
		// Listed later on the ServiceAccount: loses to "json" for the same key.
		pullSecret("later", corev1.DockerConfigJsonKey, `{"auths":{"registry.example":{"auth":"`+b64("mallory:x")+`"}}}`),
	}
	kc, err := newPullSecretKeychain(secrets)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ref  string
		want authn.AuthConfig // zero = anonymous
	}{
		{"registry.example/app", authn.AuthConfig{Username: "alice", Password: "pw-a"}},
		{"registry.example/team/private/app", authn.AuthConfig{Username: "bob", Password: "pw-b"}},
		{"registry.example/team/private", authn.AuthConfig{Username: "bob", Password: "pw-b"}},
		{"registry.example/team/privateer", authn.AuthConfig{Username: "alice", Password: "pw-a"}},
		{"REGISTRY.example/app", authn.AuthConfig{Username: "alice", Password: "pw-a"}},
		{"busybox", authn.AuthConfig{Username: "hub", Password: "pw-hub"}},
		{"docker.io/library/busybox", authn.AuthConfig{Username: "hub", Password: "pw-hub"}},
		{"token.example:5000/x", authn.AuthConfig{IdentityToken: "tok"}},
		{"old.example/x", authn.AuthConfig{Username: "carol", Password: "pw-c"}},
		{"other.example/x", authn.AuthConfig{}},
		{"registry.example:5000/app", authn.AuthConfig{}}, // another port is another registry
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			ref, err := name.ParseReference(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			a, err := kc.Resolve(ref.Context())
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Authorization()
			if err != nil {
				t.Fatal(err)
			}
			if got.Username != tt.want.Username || got.Password != tt.want.Password || got.IdentityToken != tt.want.IdentityToken {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}

func TestPullSecretKeychainErrors(t *testing.T) {
	tests := []struct {
		secret corev1.Secret
		want   string
	}{
		{pullSecret("broken", corev1.DockerConfigJsonKey, `{"auths":`), `pull secret "broken": parsing .dockerconfigjson`},
		{pullSecret("legacy", corev1.DockerConfigKey, `[]`), `pull secret "legacy": parsing .dockercfg`},
		{pullSecret("opaque", "token", `x`), `pull secret "opaque": has neither .dockerconfigjson nor .dockercfg`},
		{pullSecret("badauth", corev1.DockerConfigJsonKey, `{"auths":{"r.example":{"auth":"!!!"}}}`), `pull secret "badauth": parsing .dockerconfigjson: unable to decode auth field`},
	}
	for _, tt := range tests {
		t.Run(tt.secret.Name, func(t *testing.T) {
			_, err := newPullSecretKeychain([]corev1.Secret{tt.secret})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestEmptyKeychainIsAnonymous(t *testing.T) {
	kc, err := newPullSecretKeychain(nil)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference("registry.example/app")
	a, _ := kc.Resolve(ref.Context())
	if a != authn.Anonymous {
		t.Errorf("no pull secrets resolved to %v, want anonymous (never the manager's own docker config)", a)
	}
}

func TestReferencesOf(t *testing.T) {
	spec := &kilnv1.ImageBuildSpec{
		Base: &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "base", Key: "b"}}}},
		Layers: []kilnv1.Layer{
			{Name: "a", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "files", Key: "a"}}},
			{Name: "b", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "files", Key: "b"}}},
			{Name: "c", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "creds", Key: "c"}}},
			{Name: "d", Source: &kilnv1.Source{URL: "https://x/d", HeadersFrom: &kilnv1.LocalObjectReference{Name: "headers"}}},
			{Name: "e", Source: &kilnv1.Source{Files: []kilnv1.FileEntry{
				{Path: "/a", SecretKeyRef: &kilnv1.KeySelector{Name: "tls", Key: "k"}},
				{Path: "/b", ConfigMapKeyRef: &kilnv1.KeySelector{Name: "conf", Key: "c"}},
			}}},
			{Name: "f", Source: &kilnv1.Source{ConfigMapDir: &kilnv1.DirSource{Name: "site", TargetDir: "/srv"}}},
			{Name: "g", Variants: []kilnv1.LayerVariant{{Platform: "linux/amd64", Source: kilnv1.Source{SecretDir: &kilnv1.DirSource{Name: "certs", TargetDir: "/c"}}}}},
		},
		Target:             kilnv1.Target{Image: "r/x", CABundle: &kilnv1.CABundleSource{Secret: &kilnv1.KeySelector{Name: "ca", Key: "ca.crt"}}},
		ServiceAccountName: "builder",
	}
	got := referencesOf(spec)
	if strings.Join(got.ConfigMaps, ",") != "base,conf,files,site" || strings.Join(got.Secrets, ",") != "ca,certs,creds,headers,tls" || got.ServiceAccount != "builder" {
		t.Errorf("references: %+v", got)
	}
	keys := usedKeys(spec)
	for ref, want := range map[objectRef]string{
		{kindConfigMap, "files"}: "a,b", {kindConfigMap, "site"}: "*", {kindConfigMap, "conf"}: "c",
		{kindSecret, "tls"}: "k", {kindSecret, "certs"}: "*", {kindSecret, "headers"}: "*",
	} {
		if got := strings.Join(keys[ref], ","); got != want {
			t.Errorf("used keys of %v: %q, want %q", ref, got, want)
		}
	}
	if r := referencesOf(&kilnv1.ImageBuildSpec{}); r.ConfigMaps != nil || r.Secrets != nil {
		t.Errorf("no references expected: %+v", r)
	}
}
