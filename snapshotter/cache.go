package snapshotter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// ErrConfig is wrapped by errors about invalid source settings.
var ErrConfig = errors.New("invalid snapshotter configuration")

// CacheRegistryOptions configures NewCacheRegistry.
type CacheRegistryOptions struct {
	// URL of the Hermes cache registry: http(s)://host[:port].
	URL string
	// Username and Password authenticate to the cache; empty for anonymous
	// reads.
	Username, Password string
	// TLS configures https connections; nil uses the system roots.
	TLS *tls.Config
	// Timeout bounds connecting, waiting for each response's headers, and
	// the whole referrers lookup; default 2s. A refused connection fails at
	// once: the cache is in the cluster, so there is nothing to wait for.
	Timeout time.Duration
	// FetchTimeout bounds copying the index and its zTOCs once found;
	// default 1m.
	FetchTimeout time.Duration
	// Store is soci's local content store the artifacts are copied into.
	Store store.Store
}

// CacheRegistry finds SOCI indexes in the Hermes cache registry through the
// OCI Referrers API, keyed by the image manifest digest, in the repository
// that package registry/names assigns to the image's source repository.
type CacheRegistry struct {
	host      string
	plainHTTP bool
	client    *auth.Client
	opts      CacheRegistryOptions
}

var _ Source = (*CacheRegistry)(nil)

// NewCacheRegistry returns the cache source.
func NewCacheRegistry(o CacheRegistryOptions) (*CacheRegistry, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("%w: cache registry URL %q: want http(s)://host[:port]", ErrConfig, o.URL)
	}
	if o.Store == nil {
		return nil, fmt.Errorf("%w: cache registry needs the local store", ErrConfig)
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = time.Minute
	}
	// No retries and no long waits: every failure here has a fallback, and
	// a Pod start waits for it.
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       o.TLS,
		TLSHandshakeTimeout:   o.Timeout,
		ResponseHeaderTimeout: o.Timeout,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	c := &auth.Client{Client: &http.Client{Transport: tr}, Cache: auth.NewCache()}
	if o.Username != "" || o.Password != "" {
		c.Credential = auth.StaticCredential(u.Host, auth.Credential{Username: o.Username, Password: o.Password})
	}
	return &CacheRegistry{host: u.Host, plainHTTP: u.Scheme == "http", client: c, opts: o}, nil
}

// Name implements Source.
func (c *CacheRegistry) Name() string { return SourceCache }

// Repository returns the cache repository (host/name) that holds the
// indexes of imageRef's images.
func (c *CacheRegistry) Repository(imageRef string) (string, error) {
	return artifacts.Locator(c.host, imageRef)
}

// Fetch implements Source.
func (c *CacheRegistry) Fetch(ctx context.Context, img Image) (Index, error) {
	locator, err := c.Repository(img.Ref)
	if err != nil {
		return Index{}, err
	}
	repo, err := remote.NewRepository(locator)
	if err != nil {
		return Index{}, fmt.Errorf("cache repository %q: %w", locator, err)
	}
	repo.Client = c.client
	repo.PlainHTTP = c.plainHTTP

	lctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	desc, err := findReferrer(lctx, repo, img.Manifest)
	cancel()
	if err != nil {
		return Index{}, describe(err, c.opts.Timeout, c.opts.Timeout)
	}
	fctx, cancel := context.WithTimeout(ctx, c.opts.FetchTimeout)
	defer cancel()
	idx, err := copyIndex(fctx, locator, desc, c.opts.Store, repo)
	return idx, describe(err, c.opts.Timeout, c.opts.FetchTimeout)
}
