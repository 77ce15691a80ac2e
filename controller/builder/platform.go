package builder

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/registry/artifacts"
)

// run is the state of one Build call.
type run struct {
	b        *Builder
	settings Settings
	origin   *remote.Repository
	cache    *remote.Repository
	catalog  *remote.Repository // the zTOC catalog (artifacts.ZtocCatalog)
	dir      string
	progress func(Progress)

	mu    sync.Mutex
	built map[digest.Digest]*builtLayer // by layer digest, shared by platforms
}

// builtLayer is a layer's zTOC: in a temp file (path) while it is being
// built, in the catalog once recorded.
type builtLayer struct {
	ztoc ocispec.Descriptor // digest and size
	path string
	// disableXattrs is soci's xattr optimization verdict for this layer.
	disableXattrs bool
}

// platform indexes one platform manifest.
func (r *run) platform(ctx context.Context, t target) (*PlatformResult, error) {
	subject := ocispec.Descriptor{MediaType: t.desc.MediaType, Digest: t.desc.Digest, Size: t.desc.Size}
	pr := &PlatformResult{Platform: t.platform, Manifest: subject}

	if existing, err := r.existingIndex(ctx, subject); err != nil {
		return nil, err
	} else if existing != nil {
		pr.Index, pr.Existed = existing, true
		if ok, err := r.cache.Manifests().Exists(ctx, subject); err == nil && !ok {
			// An index built before images were mirrored: mirror it now.
			if _, body, err := r.fetchImageManifest(ctx, t.desc); err == nil {
				pr.Warnings = append(pr.Warnings, r.mirror(ctx, subject, body)...)
			}
		}
		return pr, nil
	}

	manifest, body, err := r.fetchImageManifest(ctx, t.desc)
	if err != nil {
		return nil, err
	}

	pr.Layers = make([]LayerResult, len(manifest.Layers))
	report := func(i int, p Progress) {
		if r.progress == nil {
			return
		}
		l := manifest.Layers[i]
		p.Platform, p.Manifest, p.Layer, p.Layers, p.Digest, p.Size = t.platform, t.desc.Digest, i, len(manifest.Layers), l.Digest, l.Size
		r.progress(p)
	}

	// Layers to build, once per digest even if a manifest repeats one.
	first := map[digest.Digest]int{}
	algos := map[int]string{}
	for i, l := range manifest.Layers {
		pr.Layers[i] = LayerResult{Digest: l.Digest, MediaType: l.MediaType, Size: l.Size}
		algo, err := layerPlan(l, r.settings)
		if err != nil {
			pr.Layers[i].State, pr.Layers[i].Reason = LayerSkipped, strings.TrimPrefix(err.Error(), errSkip.Error()+": ")
			report(i, Progress{State: LayerSkipped, Reason: pr.Layers[i].Reason})
			continue
		}
		if _, dup := first[l.Digest]; !dup {
			first[l.Digest] = i
			algos[i] = algo
		}
		report(i, Progress{State: LayerPending})
	}

	// Largest first: with fewer workers than layers, the big ones must not
	// be left for last (longest-processing-time-first scheduling).
	order := slices.Collect(maps.Keys(algos))
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(manifest.Layers[b].Size, manifest.Layers[a].Size), cmp.Compare(a, b))
	})
	reported := make([]bool, len(manifest.Layers)) // "built" already reported; distinct i per goroutine
	reused := make([]bool, len(manifest.Layers))   // the zTOC came from the catalog
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.b.cfg.Concurrency)
	for _, i := range order {
		l, algo := manifest.Layers[i], algos[i]
		g.Go(func() error {
			if bl := r.lookup(l.Digest); bl != nil {
				return nil // built for an earlier platform of this image
			}
			bl, was, err := r.ztoc(gctx, l, algo, func(p Progress) { report(i, p) })
			if err != nil {
				report(i, Progress{State: LayerFailed, Reason: err.Error()})
				return fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
			}
			r.mu.Lock()
			r.built[l.Digest] = bl
			r.mu.Unlock()
			reused[i] = was
			done := l.Size
			if was {
				done = 0 // nothing fetched: the zTOC was in the catalog
			}
			report(i, Progress{State: LayerBuilt, Done: done, Reused: was, Ztoc: bl.ztoc.Digest})
			reported[i] = true
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, classify(ctx, origin, err)
	}

	var blobs []ocispec.Descriptor
	var files []*builtLayer
	for i, l := range manifest.Layers {
		if pr.Layers[i].State == LayerSkipped {
			continue
		}
		bl := r.lookup(l.Digest)
		desc := r.ztocDescriptor(l, bl)
		pr.Layers[i].State, pr.Layers[i].Ztoc, pr.Layers[i].Reused = LayerBuilt, &desc, reused[i]
		if !reported[i] { // a repeated layer, or one built for another platform
			report(i, Progress{State: LayerBuilt, Ztoc: bl.ztoc.Digest, Reused: true})
		}
		blobs = append(blobs, desc)
		files = append(files, bl)
	}
	if len(blobs) == 0 {
		return pr, nil // nothing to index: every layer was skipped
	}

	// The image manifest goes in before its index, so that whoever
	// discovers the index can read its subject from the cache too.
	pr.Warnings = append(pr.Warnings, r.mirror(ctx, subject, body)...)
	index := soci.NewIndex(soci.V1, blobs, &subject, map[string]string{
		artifacts.AnnotationBuildTool: r.settings.BuildToolIdentifier,
		artifacts.AnnotationSettings:  r.settings.Annotation(),
		artifacts.AnnotationPlatform:  platforms.Format(platforms.Normalize(t.platform)),
		artifacts.AnnotationCreated:   r.b.cfg.Now().UTC().Format(time.RFC3339Nano),
	})
	desc, err := r.push(ctx, index, files)
	if err != nil {
		return nil, err
	}
	pr.Index = desc
	return pr, nil
}

func (r *run) lookup(d digest.Digest) *builtLayer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.built[d]
}

// ztocDescriptor is the index entry for a layer's zTOC, annotated exactly as
// soci's IndexBuilder does.
func (r *run) ztocDescriptor(layer ocispec.Descriptor, bl *builtLayer) ocispec.Descriptor {
	d := ocispec.Descriptor{
		MediaType: soci.SociLayerMediaType,
		Digest:    bl.ztoc.Digest,
		Size:      bl.ztoc.Size,
		Annotations: map[string]string{
			soci.IndexAnnotationImageLayerMediaType: layer.MediaType,
			soci.IndexAnnotationImageLayerDigest:    layer.Digest.String(),
			soci.IndexAnnotationSociSpanSize:        strconv.FormatInt(r.settings.SpanSize, 10),
		},
	}
	if r.settings.XAttrOptimization && bl.disableXattrs {
		d.Annotations[soci.IndexAnnotationDisableXAttrs] = "true"
	}
	return d
}

// fetchImageManifest fetches and parses a platform manifest.
func (r *run) fetchImageManifest(ctx context.Context, desc ocispec.Descriptor) (*ocispec.Manifest, []byte, error) {
	_, body, err := fetchManifest(ctx, r.origin, desc.Digest.String())
	if err != nil {
		return nil, nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, nil, fmt.Errorf("%w: manifest %s: %w", ErrUnsupportedMediaType, desc.Digest, err)
	}
	return &m, body, nil
}

// mirror stores an image manifest (or index) in the cache by digest,
// without its layers or config, so that users inspect the cache with oras
// discover and crane as if the image lived there; layers stay a 404, which
// sends clients using the cache as a mirror on to the origin. It is best
// effort: a cache that refuses (an older registry checks that the layers
// are present) leaves a warning, not a failed build.
func (r *run) mirror(ctx context.Context, desc ocispec.Descriptor, body []byte) []string {
	if err := mirrorManifest(ctx, r.cache, desc, body); err != nil {
		return []string{fmt.Sprintf("image manifest %s not stored in the cache (oras discover needs it there): %v", desc.Digest, err)}
	}
	return nil
}

func mirrorManifest(ctx context.Context, cache *remote.Repository, desc ocispec.Descriptor, body []byte) error {
	d := ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: int64(len(body))}
	if ok, err := cache.Manifests().Exists(ctx, d); err == nil && ok {
		return nil
	}
	return classify(ctx, cacheWrite, cache.Manifests().Push(ctx, d, bytes.NewReader(body)))
}

// existingIndex returns the SOCI index already in the cache for subject with
// the same settings, or nil.
func (r *run) existingIndex(ctx context.Context, subject ocispec.Descriptor) (*ocispec.Descriptor, error) {
	d, err := artifacts.FindIndex(ctx, r.cache, subject.Digest, artifacts.Selector{
		Settings: r.settings.Annotation(), BuildTool: r.settings.BuildToolIdentifier,
	})
	if errors.Is(err, artifacts.ErrNoIndex) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cache: %w", classify(ctx, cacheRead, err))
	}
	return &d, nil
}

// push puts the zTOCs (from the catalog), the empty config and then the
// index manifest in the image's repository, so the index becomes visible
// only when everything it points to is there.
func (r *run) push(ctx context.Context, index *soci.Index, files []*builtLayer) (*ocispec.Descriptor, error) {
	seen := map[digest.Digest]bool{}
	for _, f := range files {
		if seen[f.ztoc.Digest] {
			continue
		}
		seen[f.ztoc.Digest] = true
		if err := r.mountZtoc(ctx, f.ztoc); err != nil {
			return nil, fmt.Errorf("zTOC %s: %w", f.ztoc.Digest, err)
		}
	}
	config := []byte("{}")
	if err := pushBlob(ctx, r.cache, index.Config, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(config)), nil }); err != nil {
		return nil, fmt.Errorf("push index config: %w", err)
	}
	body, err := soci.MarshalIndex(index)
	if err != nil {
		return nil, err
	}
	desc := ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: index.ArtifactType,
		Digest:       digest.FromBytes(body),
		Size:         int64(len(body)),
	}
	if err := r.cache.Manifests().Push(ctx, desc, bytes.NewReader(body)); err != nil {
		return nil, fmt.Errorf("push index %s: %w", desc.Digest, classify(ctx, cacheWrite, err))
	}
	return &desc, nil
}

// pushBlob pushes a blob into repo unless it is there.
func pushBlob(ctx context.Context, repo *remote.Repository, desc ocispec.Descriptor, open func() (io.ReadCloser, error)) error {
	ok, err := repo.Blobs().Exists(ctx, desc)
	if err != nil {
		return classify(ctx, cacheWrite, err)
	}
	if ok {
		return nil
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return classify(ctx, cacheWrite, repo.Blobs().Push(ctx, desc, rc))
}

// shouldDisableXattrs is soci's xattr optimization rule: a layer without any
// extended attribute and without opaque directories can skip xattr lookups.
func shouldDisableXattrs(z *ztoc.Ztoc) bool {
	for _, md := range z.FileMetadata {
		if len(md.Xattrs()) > 0 || strings.HasSuffix(md.Name, ".wh..wh..opq") {
			return false
		}
	}
	return true
}
