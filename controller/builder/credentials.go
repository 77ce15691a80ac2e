package builder

import (
	"context"
	"encoding/json"
	"fmt"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// DockerConfigCredentials reads credentials from a Docker config file
// (config.json, with its credential helpers); an empty path means Docker's
// default ($DOCKER_CONFIG/config.json or ~/.docker/config.json). A missing
// file means anonymous access.
func DockerConfigCredentials(path string) (auth.CredentialFunc, error) {
	var (
		store credentials.Store
		err   error
	)
	if path == "" {
		store, err = credentials.NewStoreFromDocker(credentials.StoreOptions{})
	} else {
		store, err = credentials.NewStore(path, credentials.StoreOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("%w: docker config %s: %w", ErrInvalidRequest, path, err)
	}
	return storeCredentials(store), nil
}

// DockerConfigJSONCredentials reads credentials from the content of a
// Docker config ({"auths": {...}}), as found in the .dockerconfigjson key of
// a kubernetes.io/dockerconfigjson Secret.
func DockerConfigJSONCredentials(data []byte) (auth.CredentialFunc, error) {
	store, err := credentials.NewMemoryStoreFromDockerConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%w: docker config JSON: %w", ErrInvalidRequest, err)
	}
	return storeCredentials(store), nil
}

// SecretCredentials reads credentials from a Kubernetes Secret given as
// JSON (`kubectl get secret NAME -o json`), of type
// kubernetes.io/dockerconfigjson (key .dockerconfigjson) or
// kubernetes.io/dockercfg (key .dockercfg). A bare Docker config JSON is
// accepted too.
func SecretCredentials(data []byte) (auth.CredentialFunc, error) {
	var secret struct {
		Kind       string            `json:"kind"`
		Type       string            `json:"type"`
		Data       map[string][]byte `json:"data"`       // base64 in JSON
		StringData map[string]string `json:"stringData"` // plain
		Auths      json.RawMessage   `json:"auths"`
	}
	if err := json.Unmarshal(data, &secret); err != nil {
		return nil, fmt.Errorf("%w: pull secret is not JSON: %w", ErrInvalidRequest, err)
	}
	if secret.Kind == "" && secret.Auths != nil {
		return DockerConfigJSONCredentials(data)
	}
	if secret.Kind != "Secret" {
		return nil, fmt.Errorf("%w: pull secret: kind %q, want Secret or a Docker config", ErrInvalidRequest, secret.Kind)
	}
	get := func(key string) []byte {
		if v, ok := secret.StringData[key]; ok {
			return []byte(v)
		}
		return secret.Data[key]
	}
	if v := get(".dockerconfigjson"); v != nil {
		return DockerConfigJSONCredentials(v)
	}
	if v := get(".dockercfg"); v != nil {
		// The legacy format is the "auths" map alone.
		return DockerConfigJSONCredentials(append(append([]byte(`{"auths":`), v...), '}'))
	}
	return nil, fmt.Errorf("%w: secret of type %q has no .dockerconfigjson or .dockercfg key", ErrInvalidRequest, secret.Type)
}

// ChainCredentials asks each source in turn and returns the first non-empty
// credential.
func ChainCredentials(sources ...auth.CredentialFunc) auth.CredentialFunc {
	return func(ctx context.Context, host string) (auth.Credential, error) {
		for _, s := range sources {
			if s == nil {
				continue
			}
			c, err := s(ctx, host)
			if err != nil {
				return auth.EmptyCredential, err
			}
			if c != auth.EmptyCredential {
				return c, nil
			}
		}
		return auth.EmptyCredential, nil
	}
}

// dockerHubKeys are the names Docker Hub credentials are stored under; oras
// asks for registry-1.docker.io, Docker writes https://index.docker.io/v1/,
// and the in-memory store keeps index.docker.io.
var dockerHubKeys = []string{"https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"}

// storeCredentials looks a host up in store, trying every Docker Hub alias
// for Docker Hub (oras-go's credentials.Credential misses the in-memory
// store's normalized key).
func storeCredentials(store credentials.Store) auth.CredentialFunc {
	return func(ctx context.Context, host string) (auth.Credential, error) {
		keys := []string{host}
		for _, k := range dockerHubKeys {
			if k == host {
				keys = dockerHubKeys
			}
		}
		for _, k := range keys {
			c, err := store.Get(ctx, k)
			if err != nil {
				return auth.EmptyCredential, err
			}
			if c != auth.EmptyCredential {
				return c, nil
			}
		}
		return auth.EmptyCredential, nil
	}
}
