package daemon

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/awslabs/soci-snapshotter/config"
	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/awslabs/soci-snapshotter/service/resolver"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	dconfig "github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/reference"
	rhttp "github.com/hashicorp/go-retryablehttp"
)

// registryHosts returns the registry hosts of an image as containerd
// itself would configure them from the hosts.toml directory hostsDir
// (mirrors first, the image's registry last; TLS, headers), with
// credentials from creds and each client's transport passed through wrap.
//
// Every client authenticates in its transport. soci's layer fetcher sends
// its requests through RegistryHost.Client.Transport alone and never calls
// RegistryHost.Authorizer, while containerd's ConfigureHosts keeps
// credentials in the Authorizer; without authTransport, private origins
// would answer soci's range requests with 401.
//
// Answers are kept per image reference for ttl, so that a token obtained
// for one layer serves the next.
func registryHosts(ctx context.Context, hostsDir string, creds []resolver.Credential, retry config.RetryableHTTPClientConfig, ttl time.Duration, wrap func(http.RoundTripper) http.RoundTripper) source.RegistryHosts {
	type entry struct {
		hosts []docker.RegistryHost
		at    time.Time
	}
	var mu sync.Mutex
	cache := map[string]entry{}
	return func(spec reference.Spec) ([]docker.RegistryHost, error) {
		key := spec.String()
		mu.Lock()
		e, ok := cache[key]
		mu.Unlock()
		if ok && time.Since(e.at) < ttl {
			return e.hosts, nil
		}
		opts := dconfig.HostOptions{
			Credentials: func(host string) (string, string, error) {
				for _, c := range creds {
					if u, s, err := c(spec, host); err != nil || u != "" || s != "" {
						return u, s, err
					}
				}
				return "", "", nil
			},
		}
		if hostsDir != "" {
			opts.HostDir = dconfig.HostDirFromRoot(hostsDir)
		}
		hosts, err := dconfig.ConfigureHosts(ctx, opts)(spec.Hostname())
		if err != nil {
			return nil, err
		}
		for i := range hosts {
			h := &hosts[i]
			c := *h.Client
			var rt http.RoundTripper = &authTransport{base: retrying(c.Transport, retry), auth: h.Authorizer, header: h.Header}
			if wrap != nil {
				rt = wrap(rt)
			}
			c.Transport = rt
			h.Client = &c
		}
		mu.Lock()
		now := time.Now()
		for k, e := range cache { // images pulled long ago
			if now.Sub(e.at) >= ttl {
				delete(cache, k)
			}
		}
		cache[key] = entry{hosts: hosts, at: now}
		mu.Unlock()
		return hosts, nil
	}
}

// retrying retries requests that failed to connect or got a 5xx/429, with
// soci's [http] retry settings, as soci's own registry client does.
func retrying(base http.RoundTripper, cfg config.RetryableHTTPClientConfig) http.RoundTripper {
	c := rhttp.NewClient()
	c.HTTPClient = &http.Client{Transport: base}
	c.Logger = nil
	c.RetryMax = cfg.MaxRetries
	c.RetryWaitMin = time.Duration(cfg.MinWaitMsec) * time.Millisecond
	c.RetryWaitMax = time.Duration(cfg.MaxWaitMsec) * time.Millisecond
	// Hand the last response back instead of an error, like a plain
	// transport would, so callers see the registry's status.
	c.ErrorHandler = rhttp.PassthroughErrorHandler
	return &rhttp.RoundTripper{Client: c}
}

// authTransport authorizes each request with a containerd docker.Authorizer
// and, on a 401, hands the challenge to it and sends the request once more.
type authTransport struct {
	base   http.RoundTripper
	auth   docker.Authorizer
	header http.Header
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.send(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || t.auth == nil {
		return resp, err
	}
	if req.Body != nil && req.GetBody == nil {
		return resp, nil // cannot send the body twice
	}
	if err := t.auth.AddResponses(req.Context(), []*http.Response{resp}); err != nil {
		// No (other) credentials to offer: the caller gets the 401.
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return t.send(req)
}

func (t *authTransport) send(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		r.Body = body
	}
	for k, v := range t.header {
		if r.Header.Get(k) == "" {
			r.Header[k] = v
		}
	}
	if t.auth != nil {
		if err := t.auth.Authorize(r.Context(), r); err != nil {
			return nil, err
		}
	}
	return t.base.RoundTrip(r)
}
