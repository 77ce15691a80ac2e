package artifacts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/hermes-oci/hermes/registry/names"
)

// Artifact types.
const (
	// SOCIIndexV1 is the artifactType of a SOCI v1 index, found through the
	// Referrers API of its subject (soci.SociIndexArtifactTypeV1).
	SOCIIndexV1 = "application/vnd.amazon.soci.index.v1+json"
	// SOCIIndexV2 is the artifactType of a SOCI v2 index, which has no
	// subject and is named by an annotation on the image manifest instead.
	SOCIIndexV2 = "application/vnd.amazon.soci.index.v2+json"
	// ProfileType is the artifactType of a learned prefetch profile: an
	// OCI image manifest whose subject is the image manifest profiled and
	// whose one layer (ProfileMediaType) is the profile (package
	// registry/profile).
	ProfileType = "application/vnd.hermes.profile.v1+json"
	// ProfileMediaType is the media type of the profile blob.
	ProfileMediaType = "application/vnd.hermes.profile.layer.v1+json"
)

// Annotations on the index manifests Hermes builds.
const (
	// AnnotationCreated is when the index was built (RFC 3339, UTC); the
	// newest index of a manifest wins.
	AnnotationCreated = ocispec.AnnotationCreated
	// AnnotationSettings records the build settings; a build with the same
	// settings finds the index and does nothing.
	AnnotationSettings = "dev.hermes.soci.settings"
	// AnnotationPlatform is the platform the index was built for (os/arch),
	// for images whose manifest names none.
	AnnotationPlatform = "dev.hermes.platform"
	// AnnotationBuildTool is soci's build tool identifier
	// (soci.IndexAnnotationBuildToolIdentifier).
	AnnotationBuildTool = "com.amazon.soci.build-tool-identifier"
)

// ErrNoIndex means a registry answered and holds no SOCI index for the
// manifest asked about. Any other error means it could not answer.
var ErrNoIndex = errors.New("no SOCI index")

// ErrNoProfile means a registry answered and holds no prefetch profile for
// the manifest asked about.
var ErrNoProfile = errors.New("no prefetch profile")

// Repository returns the cache repository holding the artifacts of image,
// a reference as users and Pods write it ("nginx",
// "ghcr.io/org/app:1.2"): the normalized source repository with its host
// (see package registry/names).
func Repository(image string) (string, error) {
	named, err := names.ParseReference(image)
	if err != nil {
		return "", err
	}
	return names.Repository(named), nil
}

// Locator returns host/repository of image's artifacts in the cache
// registry at cacheHost (host[:port]), as oras-go and soci name a
// repository.
func Locator(cacheHost, image string) (string, error) {
	repo, err := Repository(image)
	if err != nil {
		return "", err
	}
	if cacheHost == "" {
		return "", fmt.Errorf("%w: no cache registry host", names.ErrInvalidName)
	}
	return cacheHost + "/" + repo, nil
}

// Cache is the cache registry as a client reaches it.
type Cache struct {
	// Host is host[:port].
	Host string
	// Client sends the requests (auth, retries, timeouts are the caller's).
	Client remote.Client
	// PlainHTTP talks HTTP instead of HTTPS.
	PlainHTTP bool
}

// Repository returns a client for the cache repository of image.
func (c Cache) Repository(image string) (*remote.Repository, error) {
	loc, err := Locator(c.Host, image)
	if err != nil {
		return nil, err
	}
	repo, err := remote.NewRepository(loc)
	if err != nil {
		return nil, fmt.Errorf("cache repository %q: %w", loc, err)
	}
	repo.Client, repo.PlainHTTP = c.Client, c.PlainHTTP
	return repo, nil
}

// Selector chooses among the indexes of one manifest. Zero fields accept
// anything.
type Selector struct {
	// Settings accepts only indexes whose AnnotationSettings equals it.
	Settings string
	// BuildTool accepts only indexes whose AnnotationBuildTool equals it.
	BuildTool string
	// Platform rejects indexes annotated with another platform; indexes
	// without AnnotationPlatform (other tools') are accepted.
	Platform *ocispec.Platform
}

// needsAnnotations says whether matching needs the indexes' annotations.
func (s Selector) needsAnnotations() bool {
	return s.Settings != "" || s.BuildTool != "" || s.Platform != nil
}

func (s Selector) match(ann map[string]string) bool {
	if s.Settings != "" && ann[AnnotationSettings] != s.Settings {
		return false
	}
	if s.BuildTool != "" && ann[AnnotationBuildTool] != s.BuildTool {
		return false
	}
	if s.Platform != nil {
		if p, ok := ann[AnnotationPlatform]; ok && p != platforms.Format(platforms.Normalize(*s.Platform)) {
			return false
		}
	}
	return true
}

// Newest orders descs newest first (see the package documentation), in
// place, and returns them.
func Newest(descs []ocispec.Descriptor) []ocispec.Descriptor {
	slices.SortStableFunc(descs, func(a, b ocispec.Descriptor) int {
		ta, tb := created(a), created(b)
		switch {
		case ta.After(tb):
			return -1
		case tb.After(ta):
			return 1
		}
		return strings.Compare(string(a.Digest), string(b.Digest))
	})
	return descs
}

func created(d ocispec.Descriptor) time.Time {
	t, err := time.Parse(time.RFC3339Nano, d.Annotations[AnnotationCreated])
	if err != nil {
		return time.Time{}
	}
	return t
}

// Referrers is what a lookup needs of a registry: its Referrers API (with
// oras-go's tag-schema fallback) and, for registries that list referrers
// without their annotations, the index manifests themselves.
// *remote.Repository is one.
type Referrers interface {
	registry.ReferrerLister
	content.Fetcher
}

var _ Referrers = (*remote.Repository)(nil)

// Indexes returns every SOCI v1 index of manifest in repo, newest first,
// each with its annotations (read from the index manifest when the listing
// leaves them out). A repository the registry does not have is an empty
// list, not an error.
func Indexes(ctx context.Context, repo Referrers, manifest digest.Digest) ([]ocispec.Descriptor, error) {
	out, err := referrers(ctx, repo, manifest, SOCIIndexV1)
	if err != nil {
		return nil, err
	}
	return Newest(out), nil
}

// Profiles returns every prefetch profile of manifest in repo, newest
// first, each with its annotations, as Indexes does for indexes: the same
// one Referrers lookup, filtered by ProfileType.
func Profiles(ctx context.Context, repo Referrers, manifest digest.Digest) ([]ocispec.Descriptor, error) {
	out, err := referrers(ctx, repo, manifest, ProfileType)
	if err != nil {
		return nil, err
	}
	return Newest(out), nil
}

// FindProfile returns the newest prefetch profile manifest of manifest in
// repo, or, when pinned is set, the profile manifest of that digest among
// them; an error wrapping ErrNoProfile when there is none.
func FindProfile(ctx context.Context, repo Referrers, manifest, pinned digest.Digest) (ocispec.Descriptor, error) {
	descs, err := Profiles(ctx, repo, manifest)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, d := range descs {
		if pinned == "" || d.Digest == pinned {
			return d, nil
		}
	}
	if pinned != "" {
		return ocispec.Descriptor{}, fmt.Errorf("%w for %s: pinned profile %s is not a referrer of it", ErrNoProfile, manifest, pinned)
	}
	return ocispec.Descriptor{}, fmt.Errorf("%w for %s", ErrNoProfile, manifest)
}

// referrers lists the referrers of manifest of artifactType, with their
// annotations.
func referrers(ctx context.Context, repo Referrers, manifest digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	if err := manifest.Validate(); err != nil {
		return nil, fmt.Errorf("manifest digest %q: %w", manifest, err)
	}
	var out []ocispec.Descriptor
	err := repo.Referrers(ctx, ocispec.Descriptor{Digest: manifest}, artifactType, func(refs []ocispec.Descriptor) error {
		for _, d := range refs {
			if d.ArtifactType != "" && d.ArtifactType != artifactType {
				continue // a registry that ignores the filter
			}
			out = append(out, d)
		}
		return nil
	})
	if IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", manifest, err)
	}
	for i, d := range out {
		if d.Annotations != nil {
			continue
		}
		ann, err := manifestAnnotations(ctx, repo, d)
		if err != nil {
			return nil, fmt.Errorf("%s %s of %s: %w", artifactType, d.Digest, manifest, err)
		}
		out[i].Annotations = ann
	}
	return out, nil
}

// FindIndex returns the newest SOCI v1 index of manifest in repo that sel
// accepts, or an error wrapping ErrNoIndex.
func FindIndex(ctx context.Context, repo Referrers, manifest digest.Digest, sel Selector) (ocispec.Descriptor, error) {
	descs, err := Indexes(ctx, repo, manifest)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, d := range descs {
		if !sel.needsAnnotations() || sel.match(d.Annotations) {
			return d, nil
		}
	}
	if len(descs) > 0 {
		return ocispec.Descriptor{}, fmt.Errorf("%w for %s: %d indexes, none built with the settings asked for", ErrNoIndex, manifest, len(descs))
	}
	return ocispec.Descriptor{}, fmt.Errorf("%w for %s", ErrNoIndex, manifest)
}

// maxIndexManifest bounds an index manifest read for its annotations.
const maxIndexManifest = 4 << 20

func manifestAnnotations(ctx context.Context, repo content.Fetcher, d ocispec.Descriptor) (map[string]string, error) {
	if d.MediaType == "" {
		d.MediaType = ocispec.MediaTypeImageManifest
	}
	if d.Size > maxIndexManifest {
		return nil, fmt.Errorf("index manifest of %d bytes", d.Size)
	}
	rc, err := repo.Fetch(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, maxIndexManifest+1))
	if err != nil {
		return nil, err
	}
	if d.Size > 0 && digest.FromBytes(body) != d.Digest {
		return nil, fmt.Errorf("index manifest %s: content does not match its digest", d.Digest)
	}
	var m struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("index manifest %s: %w", d.Digest, err)
	}
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	return m.Annotations, nil
}

// IsNotFound reports a registry's 404, which is how a registry says it
// lacks a repository or manifest (the cache answers so for everything it
// lacks).
func IsNotFound(err error) bool {
	var er *errcode.ErrorResponse
	return errors.Is(err, errdef.ErrNotFound) || errors.As(err, &er) && er.StatusCode == http.StatusNotFound
}
