package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/awslabs/soci-snapshotter/soci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/registry/artifacts"
)

// Every zTOC lives in the cache's zTOC catalog (artifacts.ZtocCatalog),
// recorded under its layer: a layer that many images share, a base
// image's, is fetched and indexed once, and every later image with it
// mounts the zTOC into its own repository. A layer's zTOC depends only on
// its bytes and the settings, so any image's record serves all.
//
// Within one Builder, concurrent builds of images with the same layer
// wait for the one build of that layer (singleflight), so even the first
// wave of images on one base fetches the base once.

// ztoc returns the zTOC of layer l: from the catalog if it is there,
// otherwise built now and recorded in the catalog first. reused says it
// was not fetched by this call.
func (r *run) ztoc(ctx context.Context, l ocispec.Descriptor, algo string, report func(Progress)) (bl *builtLayer, reused bool, err error) {
	key := l.Digest.String() + " " + r.settings.Annotation() + " " + r.settings.BuildToolIdentifier
	for attempt := 0; ; attempt++ {
		var built bool
		v, err, shared := r.b.layers.Do(key, func() (any, error) {
			if bl, ok := r.fromCatalog(ctx, l); ok {
				return bl, nil
			}
			built = true
			return r.buildAndRecord(ctx, l, algo, report)
		})
		if err != nil && shared && attempt == 0 && ctx.Err() == nil && errors.Is(err, ErrCancelled) {
			continue // the build we waited for was cut short; ours is not
		}
		if err != nil {
			return nil, false, err
		}
		return v.(*builtLayer), shared || !built, nil
	}
}

// fromCatalog looks layer l up in the catalog; a miss or a catalog that
// cannot answer means building it.
func (r *run) fromCatalog(ctx context.Context, l ocispec.Descriptor) (*builtLayer, bool) {
	rec, err := artifacts.FindZtoc(ctx, r.catalog, l.Digest, r.settings.Annotation(), r.settings.BuildToolIdentifier)
	if err != nil {
		return nil, false
	}
	return &builtLayer{ztoc: ocispec.Descriptor{MediaType: soci.SociLayerMediaType, Digest: rec.Ztoc.Digest, Size: rec.Ztoc.Size},
		disableXattrs: rec.DisableXattrs}, true
}

// buildAndRecord builds layer l's zTOC, pushes it into the catalog and
// records it there. The temp file goes once it is pushed.
func (r *run) buildAndRecord(ctx context.Context, l ocispec.Descriptor, algo string, report func(Progress)) (*builtLayer, error) {
	bl, err := r.layer(ctx, l, algo, report)
	if err != nil {
		return nil, err
	}
	defer os.Remove(bl.path)
	ztocDesc := ocispec.Descriptor{MediaType: soci.SociLayerMediaType, Digest: bl.ztoc.Digest, Size: bl.ztoc.Size}
	if err := pushBlob(ctx, r.catalog, ztocDesc, func() (io.ReadCloser, error) { return os.Open(bl.path) }); err != nil {
		return nil, fmt.Errorf("push zTOC %s to the catalog: %w", bl.ztoc.Digest, err)
	}
	config := ocispec.DescriptorEmptyJSON
	if err := pushBlob(ctx, r.catalog, ocispec.Descriptor{MediaType: config.MediaType, Digest: config.Digest, Size: config.Size},
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(config.Data)), nil }); err != nil {
		return nil, fmt.Errorf("push the catalog's empty config: %w", err)
	}
	body, desc, err := artifacts.NewZtocRecord(l, ztocDesc, ocispec.Descriptor{MediaType: config.MediaType, Digest: config.Digest, Size: config.Size},
		r.settings.Annotation(), r.settings.BuildToolIdentifier, r.b.cfg.Now().UTC().Format(time.RFC3339Nano), bl.disableXattrs)
	if err != nil {
		return nil, err
	}
	if err := r.catalog.Manifests().Push(ctx, desc, bytes.NewReader(body)); err != nil {
		return nil, fmt.Errorf("record zTOC %s of layer %s in the catalog: %w", bl.ztoc.Digest, l.Digest, classify(ctx, cacheWrite, err))
	}
	return &builtLayer{ztoc: ztocDesc, disableXattrs: bl.disableXattrs}, nil
}

// mountZtoc makes a catalog zTOC part of the image's cache repository: a
// cross-repository mount (no bytes move), or a copy through this process
// when the registry does not mount.
func (r *run) mountZtoc(ctx context.Context, desc ocispec.Descriptor) error {
	if ok, err := r.cache.Blobs().Exists(ctx, desc); err != nil {
		return classify(ctx, cacheWrite, err)
	} else if ok {
		return nil
	}
	err := r.cache.Mount(ctx, desc, artifacts.ZtocCatalog, func() (io.ReadCloser, error) { return r.catalog.Blobs().Fetch(ctx, desc) })
	return classify(ctx, cacheWrite, err)
}
