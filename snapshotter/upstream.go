package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/registry/artifacts"
)

// UpstreamOptions configures NewUpstream.
type UpstreamOptions struct {
	// Hosts gives the registry hosts of an image, as containerd's hosts.toml
	// directory describes them; the last host able to resolve is the
	// image's own registry. Clients must carry credentials themselves.
	Hosts source.RegistryHosts
	// V2 looks for soci's v2 annotation on the image manifest; V1 asks the
	// image registry's Referrers API (or its tag fallback). soci's
	// [pull_modes] switches.
	V1, V2 bool
	// Timeout bounds the discovery requests; default 10s.
	Timeout time.Duration
	// FetchTimeout bounds copying the index and zTOCs; default 5m: they come
	// over the same link as the image.
	FetchTimeout time.Duration
	// Store is soci's local content store the artifacts are copied into.
	Store store.Store
}

// Upstream discovers a SOCI index next to the image in its own registry, the
// way soci-snapshotter does (v2 annotation on the manifest, then v1
// referrers). It runs in the wrapper instead of in soci so that soci always
// gets an explicit index label: soci would remember a failed discovery for
// the life of the process, and a restart could not remount a snapshot whose
// index only the origin knows.
type Upstream struct {
	opts UpstreamOptions
}

var _ Source = (*Upstream)(nil)

// NewUpstream returns the upstream source.
func NewUpstream(o UpstreamOptions) (*Upstream, error) {
	if o.Hosts == nil || o.Store == nil {
		return nil, fmt.Errorf("%w: upstream discovery needs registry hosts and the local store", ErrConfig)
	}
	if !o.V1 && !o.V2 {
		return nil, fmt.Errorf("%w: upstream discovery with both soci_v1 and soci_v2 disabled", ErrConfig)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 5 * time.Minute
	}
	return &Upstream{opts: o}, nil
}

// Name implements Source.
func (u *Upstream) Name() string { return SourceUpstream }

// Fetch implements Source.
func (u *Upstream) Fetch(ctx context.Context, img Image) (Index, error) {
	spec, err := reference.Parse(img.Ref)
	if err != nil {
		return Index{}, fmt.Errorf("image reference %q: %w", img.Ref, err)
	}
	repo, locator, err := u.repository(spec)
	if err != nil {
		return Index{}, err
	}
	scope, err := docker.RepositoryScope(spec, false)
	if err != nil {
		return Index{}, err
	}
	ctx = docker.WithScope(ctx, scope)

	lctx, cancel := context.WithTimeout(ctx, u.opts.Timeout)
	desc, err := u.find(lctx, repo, img.Manifest)
	cancel()
	if err != nil {
		return Index{}, describe(err, u.opts.Timeout, u.opts.Timeout)
	}
	fctx, cancel := context.WithTimeout(ctx, u.opts.FetchTimeout)
	defer cancel()
	idx, err := copyIndex(fctx, locator, desc, u.opts.Store, repo)
	return idx, describe(err, u.opts.Timeout, u.opts.FetchTimeout)
}

func (u *Upstream) find(ctx context.Context, repo *remote.Repository, manifest digest.Digest) (ocispec.Descriptor, error) {
	if u.opts.V2 {
		desc, err := v2Annotation(ctx, repo, manifest)
		if err == nil || !errors.Is(err, ErrNoIndex) {
			return desc, err
		}
	}
	if u.opts.V1 {
		return findReferrer(ctx, repo, manifest)
	}
	return ocispec.Descriptor{}, fmt.Errorf("%w: no soci v2 annotation on %s (soci_v1 disabled)", ErrNoIndex, manifest)
}

// v2Annotation reads the index digest a SOCI v2 image carries on its
// manifest.
func v2Annotation(ctx context.Context, repo *remote.Repository, manifest digest.Digest) (ocispec.Descriptor, error) {
	_, rc, err := repo.Manifests().FetchReference(ctx, manifest.String())
	if artifacts.IsNotFound(err) {
		return ocispec.Descriptor{}, fmt.Errorf("%w: manifest %s not in %s", ErrNoIndex, manifest, repo.Reference)
	}
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s: %w", manifest, err)
	}
	defer rc.Close()
	var m ocispec.Manifest
	if err := json.NewDecoder(io.LimitReader(rc, 4<<20)).Decode(&m); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s: %w", manifest, err)
	}
	s := m.Annotations[soci.ImageAnnotationSociIndexDigest]
	if s == "" {
		return ocispec.Descriptor{}, fmt.Errorf("%w: no soci v2 annotation on %s", ErrNoIndex, manifest)
	}
	d, err := digest.Parse(s)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("soci v2 annotation on %s: %w", manifest, err)
	}
	// Size unknown: soci's fetcher resolves it through the repository.
	return ocispec.Descriptor{Digest: d}, nil
}

// repository returns an oras repository for spec at the image's own
// registry host, and its host/repository locator.
func (u *Upstream) repository(spec reference.Spec) (*remote.Repository, string, error) {
	hosts, err := u.opts.Hosts(spec)
	if err != nil {
		return nil, "", fmt.Errorf("registry hosts of %s: %w", spec.Hostname(), err)
	}
	var origin *docker.RegistryHost
	for i := range hosts {
		if hosts[i].Capabilities.Has(docker.HostCapabilityResolve) {
			origin = &hosts[i]
		}
	}
	if origin == nil {
		return nil, "", fmt.Errorf("%w: no registry host of %s can resolve", ErrNoIndex, spec.Hostname())
	}
	locator := origin.Host + "/" + strings.TrimPrefix(spec.Locator, spec.Hostname()+"/")
	repo, err := remote.NewRepository(locator)
	if err != nil {
		return nil, "", fmt.Errorf("repository %q: %w", locator, err)
	}
	repo.Client = origin.Client
	repo.PlainHTTP = origin.Scheme == "http"
	return repo, locator, nil
}
