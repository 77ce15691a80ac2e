package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/registry/names"
)

// Interface is what callers of the builder need: Build. *Builder
// implements it, and buildertest.Fake does in memory; buildertest.Run
// checks that both behave the same.
type Interface interface {
	// Resolve says which platform manifests Build would index for req
	// (req.Image, Platforms, AllPlatforms, OriginCredentials), without
	// building: a tag resolved to its digest now.
	Resolve(ctx context.Context, req Request) (*Resolved, error)
	// Build indexes the image req names into the cache registry. Errors
	// wrap one of the Err kinds; Retryable tells whether to try again.
	Build(ctx context.Context, req Request) (*Result, error)
	// Publish stores what req.Image names (an image index or manifest)
	// in the cache under req.Image's tag, for people inspecting the cache.
	Publish(ctx context.Context, req Request) error
}

// Builder builds SOCI indexes from registry images into the cache registry.
// It is safe for concurrent use; each Build bounds its own layer concurrency.
type Builder struct {
	cfg    Config
	layers singleflight.Group // layer+settings -> *builtLayer: one build of a shared layer at a time
}

var _ Interface = (*Builder)(nil)

// New returns a Builder for cfg.
func New(cfg Config) (*Builder, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.TempDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: temp dir: %w", ErrInvalidRequest, err)
	}
	return &Builder{cfg: cfg}, nil
}

// target is one platform manifest to index.
type target struct {
	platform ocispec.Platform
	desc     ocispec.Descriptor
}

// Build indexes the image req names, one SOCI index per selected platform
// manifest, and pushes the indexes to the cache registry. On error nothing
// of the failing platform is pushed; platforms completed before it stay.
func (b *Builder) Build(ctx context.Context, req Request) (*Result, error) {
	settings := req.Settings
	if err := settings.Validate(); err != nil {
		return nil, err
	}
	if b.cfg.StageLayers {
		settings.AlignFilesFrom = 0 // soci's builder places checkpoints every span only
	}
	named, originRepo, err := b.origin(req)
	if err != nil {
		return nil, err
	}
	cacheLocator, cacheRepo, err := b.cacheRepository(named)
	if err != nil {
		return nil, err
	}
	catalog, err := b.repository(b.cfg.CacheHost+"/"+artifacts.ZtocCatalog, b.cfg.CacheCredentials)
	if err != nil {
		return nil, err
	}
	res := &Result{Reference: named.String(), CacheRepository: cacheLocator}
	top, topBody, targets, err := b.resolve(ctx, named, originRepo, req)
	if err != nil {
		return nil, err
	}
	res.Digest = top.Digest

	// Every temporary file of this build lives below dir, so one RemoveAll
	// cleans up after success, errors and cancellation alike.
	dir, err := os.MkdirTemp(b.cfg.TempDir, "hermes-build-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	run := &run{
		b:        b,
		settings: settings,
		origin:   originRepo,
		cache:    cacheRepo,
		catalog:  catalog,
		dir:      dir,
		progress: req.Progress,
		built:    map[digest.Digest]*builtLayer{},
	}
	for _, t := range targets {
		pr, err := run.platform(ctx, t)
		if err != nil {
			return res, fmt.Errorf("image %s, platform %s: %w", named, platforms.Format(t.platform), err)
		}
		res.Platforms = append(res.Platforms, *pr)
	}
	if tagged, ok := named.(reference.Tagged); ok && len(res.Platforms) > 0 {
		if err := publishTag(ctx, cacheRepo, top, topBody, tagged.Tag()); err != nil {
			res.Warnings = append(res.Warnings, err.Error())
		}
	}
	return res, nil
}

// Resolve implements Interface.
func (b *Builder) Resolve(ctx context.Context, req Request) (*Resolved, error) {
	named, originRepo, err := b.origin(req)
	if err != nil {
		return nil, err
	}
	top, _, targets, err := b.resolve(ctx, named, originRepo, req)
	if err != nil {
		return nil, err
	}
	out := &Resolved{Reference: named.String(), Digest: top.Digest, MediaType: top.MediaType}
	for _, t := range targets {
		out.Platforms = append(out.Platforms, PlatformManifest{Platform: t.platform, Manifest: ocispec.Descriptor{
			MediaType: t.desc.MediaType, Digest: t.desc.Digest, Size: t.desc.Size}})
	}
	return out, nil
}

// resolve fetches what named names at the origin and selects the platform
// manifests to index.
func (b *Builder) resolve(ctx context.Context, named reference.Named, originRepo *remote.Repository, req Request) (ocispec.Descriptor, []byte, []target, error) {
	tag := ""
	if t, ok := named.(reference.Tagged); ok {
		tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		tag = d.Digest().String()
	}
	top, body, err := fetchManifest(ctx, originRepo, tag)
	if err != nil {
		return top, nil, nil, fmt.Errorf("resolve %s: %w", named, err)
	}
	targets, err := b.selectTargets(ctx, originRepo, top, body, req)
	if err != nil {
		return top, nil, nil, fmt.Errorf("image %s: %w", named, err)
	}
	return top, body, targets, nil
}

// Publish implements Interface.
func (b *Builder) Publish(ctx context.Context, req Request) error {
	named, originRepo, err := b.origin(req)
	if err != nil {
		return err
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return fmt.Errorf("%w: %s has no tag to publish", ErrInvalidRequest, named)
	}
	_, cacheRepo, err := b.cacheRepository(named)
	if err != nil {
		return err
	}
	ref := tagged.Tag()
	if d, ok := named.(reference.Digested); ok {
		ref = d.Digest().String()
	}
	top, body, err := fetchManifest(ctx, originRepo, ref)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", named, err)
	}
	return publishTag(ctx, cacheRepo, top, body, tagged.Tag())
}

// publishTag stores a top-level manifest by digest and tags it.
func publishTag(ctx context.Context, cache *remote.Repository, top ocispec.Descriptor, body []byte, tag string) error {
	if err := mirrorManifest(ctx, cache, top, body); err != nil {
		return fmt.Errorf("store %s in the cache: %w", top.Digest, err)
	}
	d := ocispec.Descriptor{MediaType: top.MediaType, Digest: top.Digest, Size: int64(len(body))}
	if err := cache.Manifests().PushReference(ctx, d, bytes.NewReader(body), tag); err != nil {
		return fmt.Errorf("tag %s as %s in the cache: %w", top.Digest, tag, classify(ctx, cacheWrite, err))
	}
	return nil
}

// origin parses req.Image and returns a client for its repository at its
// registry, with req's credentials.
func (b *Builder) origin(req Request) (reference.Named, *remote.Repository, error) {
	named, err := names.ParseReference(req.Image)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	repo, err := b.repository(reference.Domain(named)+"/"+reference.Path(named), req.OriginCredentials)
	return named, repo, err
}

// cacheRepository returns the locator of named's artifacts in the cache
// and a client for it.
func (b *Builder) cacheRepository(named reference.Named) (string, *remote.Repository, error) {
	loc, err := artifacts.Locator(b.cfg.CacheHost, named.String())
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	repo, err := b.repository(loc, b.cfg.CacheCredentials)
	return loc, repo, err
}

// repository returns an oras client for locator (host/path) with
// credentials.
func (b *Builder) repository(locator string, cred auth.CredentialFunc) (*remote.Repository, error) {
	repo, err := remote.NewRepository(locator)
	if err != nil {
		return nil, fmt.Errorf("%w: repository %s: %w", ErrInvalidRequest, locator, err)
	}
	base := b.cfg.HTTPClient
	if base == nil {
		base = retry.DefaultClient
	}
	repo.Client = &auth.Client{
		Client:     base,
		Header:     map[string][]string{"User-Agent": {b.cfg.UserAgent}},
		Cache:      auth.NewCache(),
		Credential: cred,
	}
	repo.PlainHTTP = b.cfg.PlainHTTP(repo.Reference.Registry)
	return repo, nil
}

// fetchManifest fetches a manifest or index by tag or digest ("" means
// latest) and returns its descriptor and content, which oras-go verifies
// against the digest.
func fetchManifest(ctx context.Context, repo *remote.Repository, ref string) (ocispec.Descriptor, []byte, error) {
	if ref == "" {
		ref = "latest"
	}
	desc, rc, err := repo.Manifests().FetchReference(ctx, ref)
	if err != nil {
		return desc, nil, classify(ctx, origin, err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, desc.Size+1))
	if err != nil {
		return desc, nil, classify(ctx, origin, err)
	}
	if int64(len(body)) != desc.Size || digest.FromBytes(body) != desc.Digest {
		return desc, nil, fmt.Errorf("manifest %s: %w", desc.Digest, ErrDigestMismatch)
	}
	// Some registries answer with a generic Content-Type; the document's own
	// mediaType field then decides.
	if !images.IsManifestType(desc.MediaType) && !images.IsIndexType(desc.MediaType) {
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(body, &probe) == nil && probe.MediaType != "" {
			desc.MediaType = probe.MediaType
		}
	}
	return desc, body, nil
}

// selectTargets picks the platform manifests to index.
func (b *Builder) selectTargets(ctx context.Context, repo *remote.Repository, top ocispec.Descriptor, body []byte, req Request) ([]target, error) {
	want := req.Platforms
	if len(want) == 0 {
		want = []ocispec.Platform{DefaultPlatform}
	}
	switch {
	case images.IsIndexType(top.MediaType):
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			return nil, fmt.Errorf("%w: index %s: %w", ErrUnsupportedMediaType, top.Digest, err)
		}
		var candidates []ocispec.Descriptor
		var have []string
		for _, m := range idx.Manifests {
			// Attestations and other non-image entries carry no platform or
			// unknown/unknown.
			if m.Platform == nil || m.Platform.OS == "unknown" || !images.IsManifestType(m.MediaType) {
				continue
			}
			candidates = append(candidates, m)
			have = append(have, platforms.Format(*m.Platform))
		}
		var out []target
		if req.AllPlatforms {
			for _, m := range candidates {
				out = append(out, target{platform: *m.Platform, desc: m})
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: index %s lists no platform manifests", ErrNotFound, top.Digest)
			}
			return out, nil
		}
		for _, p := range want {
			match := platforms.OnlyStrict(p)
			found := false
			for _, m := range candidates {
				if match.Match(*m.Platform) {
					out = append(out, target{platform: *m.Platform, desc: m})
					found = true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("%w: no manifest for platform %s (image has %s)", ErrNotFound, platforms.Format(p), strings.Join(have, ", "))
			}
		}
		return out, nil
	case images.IsManifestType(top.MediaType):
		var m ocispec.Manifest
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("%w: manifest %s: %w", ErrUnsupportedMediaType, top.Digest, err)
		}
		p, err := configPlatform(ctx, repo, m.Config)
		if err != nil {
			return nil, err
		}
		if p.OS == "" || req.AllPlatforms {
			// An image without a platform in its config runs anywhere it
			// is asked to; report the first requested platform.
			if p.OS == "" {
				p = want[0]
			}
			return []target{{platform: p, desc: top}}, nil
		}
		for _, w := range want {
			if platforms.OnlyStrict(w).Match(p) {
				return []target{{platform: p, desc: top}}, nil
			}
		}
		return nil, fmt.Errorf("%w: image is for platform %s, not %s", ErrNotFound, platforms.Format(p), formatPlatforms(want))
	default:
		return nil, fmt.Errorf("%w: %q is neither an image manifest nor an image index", ErrUnsupportedMediaType, top.MediaType)
	}
}

func formatPlatforms(ps []ocispec.Platform) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = platforms.Format(p)
	}
	return strings.Join(s, ", ")
}

// configPlatform reads the platform of a single-platform image from its
// config blob (small; bounded).
func configPlatform(ctx context.Context, repo *remote.Repository, desc ocispec.Descriptor) (ocispec.Platform, error) {
	const maxConfig = 4 << 20
	if desc.Size > maxConfig {
		return ocispec.Platform{}, fmt.Errorf("%w: config %s is %d bytes", ErrUnsupportedMediaType, desc.Digest, desc.Size)
	}
	rc, err := repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		return ocispec.Platform{}, fmt.Errorf("config %s: %w", desc.Digest, classify(ctx, origin, err))
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, desc.Size+1))
	if err != nil {
		return ocispec.Platform{}, fmt.Errorf("config %s: %w", desc.Digest, classify(ctx, origin, err))
	}
	if digest.FromBytes(body) != desc.Digest {
		return ocispec.Platform{}, fmt.Errorf("config %s: %w", desc.Digest, ErrDigestMismatch)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(body, &cfg); err != nil {
		// Not an image config (an artifact): no platform to check.
		return ocispec.Platform{}, nil
	}
	return cfg.Platform, nil
}

// errSkip marks a layer that gets no zTOC; the message is the reason.
var errSkip = errors.New("skipped")

// layerPlan decides whether a layer gets a zTOC, and with which compression,
// by the same rules as soci's IndexBuilder (so indexes match), except that a
// layer soci would fail on is skipped with the reason.
func layerPlan(l ocispec.Descriptor, s Settings) (algorithm string, err error) {
	if l.MediaType == soci.SociPrefetchMediaType {
		return "", fmt.Errorf("%w: a SOCI prefetch artifact", errSkip)
	}
	if !images.IsLayerType(l.MediaType) {
		return "", fmt.Errorf("%w: media type %q is not a layer", errSkip, l.MediaType)
	}
	if l.Size < s.MinLayerSize {
		return "", fmt.Errorf("%w: size %d is less than min-layer-size %d", errSkip, l.Size, s.MinLayerSize)
	}
	if strings.HasSuffix(l.MediaType, "+encrypted") {
		return "", fmt.Errorf("%w: media type %q is encrypted", errSkip, l.MediaType)
	}
	algo, err := images.DiffCompression(context.Background(), l.MediaType)
	if err != nil {
		return "", fmt.Errorf("%w: media type %q: %v", errSkip, l.MediaType, err)
	}
	if algo == "" && l.MediaType == ocispec.MediaTypeImageLayer {
		algo = "uncompressed"
	}
	switch algo {
	case "gzip", "uncompressed", "unknown":
		return algo, nil
	case "":
		return "", fmt.Errorf("%w: media type %q is wrapped (encrypted?)", errSkip, l.MediaType)
	default:
		return "", fmt.Errorf("%w: compressed with %s; SOCI v1 supports gzip and uncompressed tar", errSkip, algo)
	}
}
