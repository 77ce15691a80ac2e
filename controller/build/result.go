package build

import (
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// LayerState is where a layer is in its build.
type LayerState string

// Layer states, in the order a layer passes through them. A layer ends in
// Built, Skipped or Failed.
const (
	LayerPending  LayerState = "pending"
	LayerFetching LayerState = "fetching"
	LayerIndexing LayerState = "indexing"
	LayerBuilt    LayerState = "built"
	LayerSkipped  LayerState = "skipped"
	LayerFailed   LayerState = "failed"
)

// Progress is one event about one layer.
type Progress struct {
	Platform ocispec.Platform
	Manifest digest.Digest // the platform manifest the layer belongs to
	Layer    int           // position in the manifest, from 0
	Layers   int           // number of layers in the manifest
	Digest   digest.Digest // the layer blob
	Size     int64         // compressed size of the layer blob
	Done     int64         // bytes of the blob fetched so far
	State    LayerState
	Reason   string        // why a layer was skipped or failed
	Ztoc     digest.Digest // the zTOC, once built
}

// Result describes what a build did.
type Result struct {
	// Reference is the normalized image reference.
	Reference string
	// Digest is what the reference resolved to: an image index or manifest.
	Digest digest.Digest
	// CacheRepository is the repository in the cache registry, host included
	// ("127.0.0.1:5001/docker.io/library/nginx").
	CacheRepository string
	// Platforms has one entry per selected platform manifest.
	Platforms []PlatformResult
}

// PlatformResult is the outcome for one platform manifest.
type PlatformResult struct {
	Platform ocispec.Platform
	// Manifest is the platform image manifest: the index's subject.
	Manifest ocispec.Descriptor
	// Index is the SOCI index manifest in the cache; nil when every layer
	// was skipped (nothing to index).
	Index *ocispec.Descriptor
	// Existed says the cache already had an index for this manifest with the
	// same settings, and nothing was built or pushed.
	Existed bool
	// Layers has one entry per layer, in manifest order (empty if Existed).
	Layers []LayerResult
}

// LayerResult is the outcome for one layer.
type LayerResult struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	State     LayerState // LayerBuilt or LayerSkipped
	Reason    string     // why it was skipped
	// Ztoc is the zTOC descriptor as it appears in the index, when built.
	Ztoc *ocispec.Descriptor
}
