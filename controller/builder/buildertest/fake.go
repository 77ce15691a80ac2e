// Package buildertest holds what tests of builder.Interface callers need: an
// in-memory Fake builder, and Run, the suite that the Fake and the real
// Builder (over real registries) both pass, so a test that uses the Fake
// tests against the real builder's behaviour.
package buildertest

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/registry/names"
)

// Fake is an in-memory builder.Interface. Images are added with AddImage;
// Build answers as the real Builder would for them (results, Existed on a
// repeat with the same settings, progress events, error kinds), and records
// what it built. Failures can be injected per repository, and builds can be
// held to test concurrency. Safe for concurrent use.
type Fake struct {
	// CacheHost is reported in results' CacheRepository.
	CacheHost string

	mu        sync.Mutex
	images    map[string]*fakeImage // "repository:tag" and "repository@digest"
	indexes   map[string]ocispec.Descriptor
	fail      map[string][]error // repository -> errors for the next builds
	status    int                // every origin request answers this, when set
	hold      chan struct{}      // while set, builds wait for it to close
	calls     int
	resolves  int
	built     map[digest.Digest]int    // manifest -> builds that pushed an index
	published map[string]digest.Digest // cache repository:tag -> digest
	seq       int
}

var _ builder.Interface = (*Fake)(nil)

type fakeImage struct {
	repo      string
	top       digest.Digest
	manifests []fakeManifest
	cred      *auth.Credential
}

type fakeManifest struct {
	platform ocispec.Platform
	desc     ocispec.Descriptor
	layers   []ocispec.Descriptor
}

// ImageOptions describe an image for AddImage.
type ImageOptions struct {
	// Platforms of the image; empty means linux/amd64 alone, a single
	// manifest. More than one makes an image index.
	Platforms []ocispec.Platform
	// Layers per platform manifest (default 2), each 1 MiB.
	Layers int
	// Credential, if set, is required to read the image.
	Credential *auth.Credential
}

// NewFake returns a Fake with no images.
func NewFake() *Fake {
	return &Fake{CacheHost: "cache.test:5000", images: map[string]*fakeImage{}, indexes: map[string]ocispec.Descriptor{},
		fail: map[string][]error{}, built: map[digest.Digest]int{}, published: map[string]digest.Digest{}}
}

// AddImage makes an image available under ref (a tag reference) and
// returns the digest ref resolves to: the manifest, or the index of a
// multi-platform image. Adding ref again moves the tag to new content.
func (f *Fake) AddImage(ref string, o ImageOptions) (digest.Digest, error) {
	named, err := names.ParseReference(ref)
	if err != nil {
		return "", err
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return "", fmt.Errorf("%s: AddImage needs a tag", ref)
	}
	if len(o.Platforms) == 0 {
		o.Platforms = []ocispec.Platform{builder.DefaultPlatform}
	}
	if o.Layers == 0 {
		o.Layers = 2
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	repo := names.Repository(named)
	im := &fakeImage{repo: repo, cred: o.Credential}
	for _, p := range o.Platforms {
		m := fakeManifest{platform: p}
		for i := 0; i < o.Layers; i++ {
			m.layers = append(m.layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip,
				Digest: digest.FromString(fmt.Sprintf("%s %d %s layer %d", ref, f.seq, platforms.Format(p), i)), Size: 1 << 20})
		}
		m.desc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest,
			Digest: digest.FromString(fmt.Sprintf("%s %d %s manifest", ref, f.seq, platforms.Format(p))), Size: 500, Platform: &p}
		im.manifests = append(im.manifests, m)
		f.images[repo+"@"+m.desc.Digest.String()] = &fakeImage{repo: repo, top: m.desc.Digest, manifests: []fakeManifest{m}, cred: o.Credential}
	}
	im.top = im.manifests[0].desc.Digest
	if len(im.manifests) > 1 {
		im.top = digest.FromString(fmt.Sprintf("%s %d index", ref, f.seq))
	}
	f.images[repo+":"+tagged.Tag()] = im
	f.images[repo+"@"+im.top.String()] = im
	return im.top, nil
}

// Manifest returns the digest of ref's manifest for platform p.
func (f *Fake) Manifest(ref string, p ocispec.Platform) (digest.Digest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	im, err := f.lookup(ref)
	if err != nil {
		return "", err
	}
	for _, m := range im.manifests {
		if platforms.OnlyStrict(p).Match(m.platform) {
			return m.desc.Digest, nil
		}
	}
	return "", fmt.Errorf("%s has no manifest for %s", ref, platforms.Format(p))
}

// FailNext makes the next len(errs) builds of ref's repository fail with
// errs, in order. Use the builder's error kinds (builder.ErrUnavailable…)
// so callers' Retryable checks see what the real builder would return.
func (f *Fake) FailNext(ref string, errs ...error) error {
	repo, err := artifacts.Repository(ref)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[repo] = append(f.fail[repo], errs...)
	return nil
}

// SetOriginStatus makes every origin request answer status (0: serve),
// as a registry answering 503 or 401 to everything would.
func (f *Fake) SetOriginStatus(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = status
}

// Hold makes builds wait until release is called (or their context ends).
func (f *Fake) Hold() (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.hold = ch
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			if f.hold == ch {
				f.hold = nil
			}
			f.mu.Unlock()
			close(ch)
		})
	}
}

// Calls is how many times Build was called.
func (f *Fake) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Builds is how many builds pushed an index for manifest.
func (f *Fake) Builds(manifest digest.Digest) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.built[manifest]
}

// TotalBuilds is how many indexes were pushed in all.
func (f *Fake) TotalBuilds() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.built {
		n += c
	}
	return n
}

func (f *Fake) lookup(ref string) (*fakeImage, error) {
	named, err := names.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", builder.ErrInvalidRequest, err)
	}
	repo := names.Repository(named)
	key := ""
	if d, ok := named.(reference.Digested); ok {
		key = repo + "@" + d.Digest().String()
	} else if t, ok := named.(reference.Tagged); ok {
		key = repo + ":" + t.Tag()
	}
	im, ok := f.images[key]
	if !ok {
		return nil, fmt.Errorf("resolve %s: %w: %w", named, builder.ErrNotFound, statusError(named, http.StatusNotFound))
	}
	return im, nil
}

func statusError(named reference.Named, code int) error {
	return &errcode.ErrorResponse{Method: http.MethodGet, URL: &url.URL{Scheme: "https", Host: reference.Domain(named), Path: "/v2/" + reference.Path(named) + "/manifests"}, StatusCode: code}
}

// Resolve implements builder.Interface.
func (f *Fake) Resolve(ctx context.Context, req builder.Request) (*builder.Resolved, error) {
	named, err := names.ParseReference(req.Image)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", builder.ErrInvalidRequest, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolves++
	im, err := f.origin(ctx, named, req)
	if err != nil {
		return nil, err
	}
	targets, err := f.targets(im, req)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", named, err)
	}
	out := &builder.Resolved{Reference: named.String(), Digest: im.top, MediaType: ocispec.MediaTypeImageManifest}
	if len(im.manifests) > 1 {
		out.MediaType = ocispec.MediaTypeImageIndex
	}
	for _, m := range targets {
		out.Platforms = append(out.Platforms, builder.PlatformManifest{Platform: m.platform,
			Manifest: ocispec.Descriptor{MediaType: m.desc.MediaType, Digest: m.desc.Digest, Size: m.desc.Size}})
	}
	return out, nil
}

// Resolves is how many times Resolve was called.
func (f *Fake) Resolves() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resolves
}

// origin answers as the image's registry would: injected status, the
// image, its credential check. f.mu is held.
func (f *Fake) origin(ctx context.Context, named reference.Named, req builder.Request) (*fakeImage, error) {
	switch f.status {
	case 0:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("resolve %s: %w: %w", named, builder.ErrUnauthorized, statusError(named, f.status))
	case http.StatusNotFound:
		return nil, fmt.Errorf("resolve %s: %w: %w", named, builder.ErrNotFound, statusError(named, f.status))
	default:
		return nil, fmt.Errorf("resolve %s: %w: %w", named, builder.ErrUnavailable, statusError(named, f.status))
	}
	im, err := f.lookup(req.Image)
	if err != nil {
		return nil, err
	}
	if im.cred != nil {
		if req.OriginCredentials == nil {
			return nil, fmt.Errorf("resolve %s: %w: 401 and no credential for this registry", named, builder.ErrUnauthorized)
		}
		c, err := req.OriginCredentials(ctx, reference.Domain(named))
		if err != nil || c.Username != im.cred.Username || c.Password != im.cred.Password {
			return nil, fmt.Errorf("resolve %s: %w: %w", named, builder.ErrUnauthorized, statusError(named, http.StatusUnauthorized))
		}
	}
	return im, nil
}

// Publish implements builder.Interface: it records the tag.
func (f *Fake) Publish(ctx context.Context, req builder.Request) error {
	named, err := names.ParseReference(req.Image)
	if err != nil {
		return fmt.Errorf("%w: %w", builder.ErrInvalidRequest, err)
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return fmt.Errorf("%w: %s has no tag to publish", builder.ErrInvalidRequest, named)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	im, err := f.origin(ctx, named, req)
	if err != nil {
		return err
	}
	f.published[names.Repository(named)+":"+tagged.Tag()] = im.top
	return nil
}

// Published returns the digest the cache tag ref (repository:tag) was
// published as, or "".
func (f *Fake) Published(ref string) digest.Digest {
	named, err := names.ParseReference(ref)
	if err != nil {
		return ""
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.published[names.Repository(named)+":"+tagged.Tag()]
}

// Build implements builder.Interface.
func (f *Fake) Build(ctx context.Context, req builder.Request) (*builder.Result, error) {
	if err := req.Settings.Validate(); err != nil {
		return nil, err
	}
	named, err := names.ParseReference(req.Image)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", builder.ErrInvalidRequest, err)
	}
	f.mu.Lock()
	f.calls++
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", builder.ErrCancelled, ctx.Err())
		}
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", builder.ErrCancelled, ctx.Err())
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	repo := names.Repository(named)
	res := &builder.Result{Reference: named.String(), CacheRepository: f.CacheHost + "/" + repo}
	if errs := f.fail[repo]; len(errs) > 0 {
		f.fail[repo] = errs[1:]
		return res, errs[0]
	}
	im, err := f.origin(ctx, named, req)
	if err != nil {
		return res, err
	}
	res.Digest = im.top
	targets, err := f.targets(im, req)
	if err != nil {
		return res, fmt.Errorf("image %s: %w", named, err)
	}
	for _, m := range targets {
		pr := builder.PlatformResult{Platform: m.platform, Manifest: ocispec.Descriptor{MediaType: m.desc.MediaType, Digest: m.desc.Digest, Size: m.desc.Size}}
		key := repo + "@" + m.desc.Digest.String() + " " + req.Settings.Annotation() + " " + req.Settings.BuildToolIdentifier
		if idx, ok := f.indexes[key]; ok {
			pr.Index, pr.Existed = &idx, true
			res.Platforms = append(res.Platforms, pr)
			continue
		}
		for i, l := range m.layers {
			lr := builder.LayerResult{Digest: l.Digest, MediaType: l.MediaType, Size: l.Size, State: builder.LayerBuilt}
			if l.Size < req.Settings.MinLayerSize {
				lr.State, lr.Reason = builder.LayerSkipped, fmt.Sprintf("size %d is less than min-layer-size %d", l.Size, req.Settings.MinLayerSize)
			}
			pr.Layers = append(pr.Layers, lr)
			if req.Progress != nil {
				req.Progress(builder.Progress{Platform: m.platform, Manifest: m.desc.Digest, Layer: i, Layers: len(m.layers),
					Digest: l.Digest, Size: l.Size, Done: l.Size, State: lr.State, Reason: lr.Reason})
			}
		}
		if slices.ContainsFunc(pr.Layers, func(l builder.LayerResult) bool { return l.State == builder.LayerBuilt }) {
			f.seq++
			idx := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifacts.SOCIIndexV1,
				Digest: digest.FromString(fmt.Sprintf("index %d of %s", f.seq, key)), Size: 1000}
			f.indexes[key] = idx
			f.built[m.desc.Digest]++
			pr.Index = &idx
		}
		res.Platforms = append(res.Platforms, pr)
	}
	if tagged, ok := named.(reference.Tagged); ok && len(res.Platforms) > 0 {
		f.published[repo+":"+tagged.Tag()] = im.top
	}
	return res, nil
}

func (f *Fake) targets(im *fakeImage, req builder.Request) ([]fakeManifest, error) {
	if req.AllPlatforms {
		return im.manifests, nil
	}
	want := req.Platforms
	if len(want) == 0 {
		want = []ocispec.Platform{builder.DefaultPlatform}
	}
	var out []fakeManifest
	for _, p := range want {
		found := false
		for _, m := range im.manifests {
			if platforms.OnlyStrict(p).Match(m.platform) {
				out, found = append(out, m), true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: no manifest for platform %s", builder.ErrNotFound, platforms.Format(p))
		}
	}
	return out, nil
}
