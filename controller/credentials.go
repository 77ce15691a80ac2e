package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	k8schain "github.com/google/go-containerregistry/pkg/authn/kubernetes"
	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/client-go/kubernetes"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// credentials are what a build reads an image's registry with.
type credentials struct {
	fn auth.CredentialFunc // nil: anonymous
	// fingerprint names the credential content (not the secret): a
	// terminal failure is retried only when it changes.
	fingerprint string
}

// credentialSource turns where a Pod's pull credentials come from into
// credentials for one image.
type credentialSource interface {
	credentials(ctx context.Context, sources []credSource, image string) (credentials, error)
}

// kubeCredentials reads pull secrets the way the kubelet does: the Pod's
// imagePullSecrets, then its ServiceAccount's, matched against the image
// with the kubelet's rules (go-containerregistry's k8s keychain). It only
// gets Secrets and ServiceAccounts by name, never lists or watches them, and
// remembers each source's keychain for ttl so a burst of Pods costs a few
// reads.
type kubeCredentials struct {
	client kubernetes.Interface
	ttl    time.Duration
	now    func() time.Time

	mu    sync.Mutex
	cache map[credSource]keychainEntry
}

type keychainEntry struct {
	kc      authn.Keychain
	expires time.Time
}

func newKubeCredentials(client kubernetes.Interface, ttl time.Duration) *kubeCredentials {
	return &kubeCredentials{client: client, ttl: ttl, now: time.Now, cache: map[credSource]keychainEntry{}}
}

func (k *kubeCredentials) keychain(ctx context.Context, s credSource) (authn.Keychain, error) {
	k.mu.Lock()
	e, ok := k.cache[s]
	k.mu.Unlock()
	if ok && k.now().Before(e.expires) {
		return e.kc, nil
	}
	var secrets []string
	if s.PullSecrets != "" {
		secrets = strings.Split(s.PullSecrets, ",")
	}
	kc, err := k8schain.New(ctx, k.client, k8schain.Options{Namespace: s.Namespace, ServiceAccountName: s.ServiceAccount, ImagePullSecrets: secrets})
	if err != nil {
		return nil, fmt.Errorf("pull secrets of %s: %w", s, err)
	}
	k.mu.Lock()
	if len(k.cache) > 4096 {
		clear(k.cache)
	}
	k.cache[s] = keychainEntry{kc: kc, expires: k.now().Add(k.ttl)}
	k.mu.Unlock()
	return kc, nil
}

// credentials returns the first non-anonymous credential the sources hold
// for image, or anonymous credentials.
func (k *kubeCredentials) credentials(ctx context.Context, sources []credSource, image string) (credentials, error) {
	repo, err := name.NewRepository(imageRepository(image))
	if err != nil {
		return credentials{}, fmt.Errorf("image %s: %w", image, err)
	}
	for _, s := range sources {
		kc, err := k.keychain(ctx, s)
		if err != nil {
			return credentials{}, err
		}
		a, err := kc.Resolve(repo)
		if err != nil {
			return credentials{}, fmt.Errorf("pull secrets of %s for %s: %w", s, repo, err)
		}
		if a == authn.Anonymous {
			continue
		}
		cfg, err := a.Authorization()
		if err != nil {
			return credentials{}, fmt.Errorf("pull secrets of %s for %s: %w", s, repo, err)
		}
		return staticCredentials(auth.Credential{Username: cfg.Username, Password: cfg.Password,
			RefreshToken: cfg.IdentityToken, AccessToken: cfg.RegistryToken}), nil
	}
	return credentials{fingerprint: "anonymous"}, nil
}

// staticCredentials answers c for every host: a build's origin credentials
// are only ever asked for by the image's own registry (oras-go asks for
// Docker Hub as registry-1.docker.io).
func staticCredentials(c auth.Credential) credentials {
	h := sha256.Sum256([]byte(c.Username + "\x00" + c.Password + "\x00" + c.RefreshToken + "\x00" + c.AccessToken))
	return credentials{
		fn:          func(context.Context, string) (auth.Credential, error) { return c, nil },
		fingerprint: hex.EncodeToString(h[:8]),
	}
}

// imageRepository strips tag and digest from a normalized reference.
func imageRepository(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		image = image[:i]
	}
	return image
}
