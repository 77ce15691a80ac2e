package builder

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
	Platform ocispec.Platform `json:"platform"`
	Manifest digest.Digest    `json:"manifest"` // the platform manifest the layer belongs to
	Layer    int              `json:"layer"`    // position in the manifest, from 0
	Layers   int              `json:"layers"`   // number of layers in the manifest
	Digest   digest.Digest    `json:"digest"`   // the layer blob
	Size     int64            `json:"size"`     // compressed size of the layer blob
	Done     int64            `json:"done"`     // bytes of the blob fetched so far
	State    LayerState       `json:"state"`
	Reason   string           `json:"reason,omitempty"` // why a layer was skipped or failed
	Ztoc     digest.Digest    `json:"ztoc,omitempty"`   // the zTOC, once built
	// Reused: the zTOC was already in the cache's catalog (a layer shared
	// with an image built before); nothing was fetched for it.
	Reused bool `json:"reused,omitempty"`
}

// Result describes what a build did.
type Result struct {
	// Reference is the normalized image reference.
	Reference string `json:"reference"`
	// Digest is what the reference resolved to: an image index or manifest.
	Digest digest.Digest `json:"digest"`
	// CacheRepository is the repository in the cache registry, host included
	// ("127.0.0.1:5001/docker.io/library/nginx").
	CacheRepository string `json:"cacheRepository"`
	// Platforms has one entry per selected platform manifest.
	Platforms []PlatformResult `json:"platforms"`
	// Warnings are things that went wrong without failing the build (the
	// tag not stored in the cache, say).
	Warnings []string `json:"warnings,omitempty"`
}

// PlatformResult is the outcome for one platform manifest.
type PlatformResult struct {
	Platform ocispec.Platform `json:"platform"`
	// Manifest is the platform image manifest: the index's subject.
	Manifest ocispec.Descriptor `json:"manifest"`
	// Index is the SOCI index manifest in the cache; nil when every layer
	// was skipped (nothing to index).
	Index *ocispec.Descriptor `json:"index,omitempty"`
	// Existed says the cache already had an index for this manifest with the
	// same settings, and nothing was built or pushed.
	Existed bool `json:"existed,omitempty"`
	// Layers has one entry per layer, in manifest order (empty if Existed).
	Layers []LayerResult `json:"layers,omitempty"`
	// Warnings are things that went wrong without failing the build.
	Warnings []string `json:"warnings,omitempty"`
}

// LayerResult is the outcome for one layer.
type LayerResult struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	State     LayerState    `json:"state"`            // LayerBuilt or LayerSkipped
	Reason    string        `json:"reason,omitempty"` // why it was skipped
	// Ztoc is the zTOC descriptor as it appears in the index, when built.
	Ztoc *ocispec.Descriptor `json:"ztoc,omitempty"`
	// Reused: the zTOC came from the cache's catalog, not from the layer.
	Reused bool `json:"reused,omitempty"`
}

// Resolved is what an image reference names at its registry now.
type Resolved struct {
	// Reference is the normalized image reference.
	Reference string `json:"reference"`
	// Digest and MediaType are what the reference resolved to: an image
	// index or an image manifest.
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	// Platforms are the platform manifests Build would index, in the order
	// the request asked for them.
	Platforms []PlatformManifest `json:"platforms"`
}

// PlatformManifest is one platform's image manifest.
type PlatformManifest struct {
	Platform ocispec.Platform   `json:"platform"`
	Manifest ocispec.Descriptor `json:"manifest"`
}
