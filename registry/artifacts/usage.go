package artifacts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/registry/names"
)

// The usage catalog: when Pods last used each image manifest that has
// artifacts, kept in the cache itself so that it survives controller
// restarts and failover without a database. Manifests are immutable, so a
// record is never changed: a new one is pushed and the old one deleted.
// Every record has the same subject, UsageRoot, so one Referrers listing
// (paginated, annotations included) returns them all; this is how the
// controller's garbage collection finds every manifest with artifacts
// through the OCI API alone.
//
//	<cache>/hermes/usage
//	├── manifests/<record digest>   artifactType UsageRecordType,
//	│                               subject = UsageRoot (the empty JSON descriptor),
//	│                               config and layers = the empty JSON blob,
//	│                               annotations: repository, manifest, images,
//	│                               in use, last used, retention
//	├── blobs/<{}>
//	└── /referrers/<UsageRoot>?artifactType=UsageRecordType
const (
	// UsageCatalog is the catalog's repository; like ZtocCatalog, no image
	// maps to it.
	UsageCatalog = "hermes/usage"
	// UsageRecordType is the artifactType of a usage record.
	UsageRecordType = "application/vnd.hermes.usage.v1+json"

	AnnotationUsageRepository = "dev.hermes.usage.repository" // the image's source repository (docker.io/library/nginx)
	AnnotationUsageManifest   = "dev.hermes.usage.manifest"   // the image manifest: the indexes' subject
	AnnotationUsageImages     = "dev.hermes.usage.images"     // JSON list of the references Pods used
	AnnotationUsageInUse      = "dev.hermes.usage.in-use"     // "true" while Pods use it
	AnnotationUsageLastUsed   = "dev.hermes.usage.last-used"  // RFC 3339: when it was last seen in use
	AnnotationUsageRetention  = "dev.hermes.usage.retention"  // Go duration: the longest retention of the policies that matched it
)

// UsageRoot is the subject of every usage record.
var UsageRoot = ocispec.DescriptorEmptyJSON

// MaxUsageImages bounds the references a record keeps.
const MaxUsageImages = 16

// Usage is what a record says of one image manifest.
type Usage struct {
	// Repository is the image's normalized source repository, as
	// Cache.Repository takes it.
	Repository string
	// Manifest is the platform image manifest whose indexes this is about.
	Manifest digest.Digest
	// Images are the normalized references Pods used for it (at most
	// MaxUsageImages, sorted): what policies are matched against.
	Images []string
	// InUse says Pods used it when the record was written; LastUsed is
	// when that was (or when it was seen unused for the first time).
	InUse    bool
	LastUsed time.Time
	// Retention is the longest retention of the policies that matched it
	// when the record was written: it still applies once no policy does.
	Retention time.Duration
	// Record is the record's own descriptor (set when listed or put).
	Record ocispec.Descriptor
}

// NewUsageRecord returns the record manifest of u.
func NewUsageRecord(u Usage) ([]byte, ocispec.Descriptor, error) {
	if u.Repository == "" || u.Manifest.Validate() != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("usage record of %q@%q: no repository or manifest digest", u.Repository, u.Manifest)
	}
	imgs := u.Images
	if len(imgs) > MaxUsageImages {
		imgs = imgs[:MaxUsageImages]
	}
	list, err := json.Marshal(imgs)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: UsageRecordType,
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       []ocispec.Descriptor{ocispec.DescriptorEmptyJSON},
		Subject:      &UsageRoot,
		Annotations: map[string]string{
			AnnotationUsageRepository: u.Repository,
			AnnotationUsageManifest:   u.Manifest.String(),
			AnnotationUsageImages:     string(list),
			AnnotationUsageInUse:      strconv.FormatBool(u.InUse),
			AnnotationUsageLastUsed:   u.LastUsed.UTC().Format(time.RFC3339Nano),
			AnnotationUsageRetention:  u.Retention.String(),
		},
	}
	m.SchemaVersion = 2
	body, err := json.Marshal(m)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return body, ocispec.Descriptor{MediaType: m.MediaType, ArtifactType: UsageRecordType, Digest: digest.FromBytes(body), Size: int64(len(body)),
		Annotations: m.Annotations}, nil
}

// parseUsage reads a record from its descriptor's annotations.
func parseUsage(d ocispec.Descriptor) (Usage, error) {
	a := d.Annotations
	u := Usage{Repository: a[AnnotationUsageRepository], Manifest: digest.Digest(a[AnnotationUsageManifest]), InUse: a[AnnotationUsageInUse] == "true", Record: d}
	if u.Repository == "" || u.Manifest.Validate() != nil {
		return u, fmt.Errorf("usage record %s: no repository or manifest", d.Digest)
	}
	if err := json.Unmarshal([]byte(a[AnnotationUsageImages]), &u.Images); err != nil {
		return u, fmt.Errorf("usage record %s: images: %w", d.Digest, err)
	}
	t, err := time.Parse(time.RFC3339Nano, a[AnnotationUsageLastUsed])
	if err != nil {
		return u, fmt.Errorf("usage record %s: last used: %w", d.Digest, err)
	}
	u.LastUsed = t
	if u.Retention, err = time.ParseDuration(a[AnnotationUsageRetention]); err != nil {
		return u, fmt.Errorf("usage record %s: retention: %w", d.Digest, err)
	}
	return u, nil
}

// Usages returns every record in catalog (the UsageCatalog repository),
// and the descriptors of records it could not read (to be deleted). An
// empty catalog is an empty list.
func Usages(ctx context.Context, catalog Referrers) ([]Usage, []ocispec.Descriptor, error) {
	var out []Usage
	var bad []ocispec.Descriptor
	err := catalog.Referrers(ctx, UsageRoot, UsageRecordType, func(refs []ocispec.Descriptor) error {
		for _, d := range refs {
			if d.ArtifactType != UsageRecordType {
				continue
			}
			if d.Annotations == nil {
				ann, err := manifestAnnotations(ctx, catalog, d)
				if err != nil {
					return fmt.Errorf("usage record %s: %w", d.Digest, err)
				}
				d.Annotations = ann
			}
			u, err := parseUsage(d)
			if err != nil {
				bad = append(bad, d)
				continue
			}
			out = append(out, u)
		}
		return nil
	})
	if IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("usage records: %w", err)
	}
	return out, bad, nil
}

// UsageStore is what putting a record needs of the catalog repository;
// *remote.Repository is one.
type UsageStore interface {
	Blobs() registry.BlobStore
	Manifests() registry.ManifestStore
}

// PutUsage pushes u's record to catalog (blob first, then the manifest)
// and returns it with Record set.
func PutUsage(ctx context.Context, catalog UsageStore, u Usage) (Usage, error) {
	body, desc, err := NewUsageRecord(u)
	if err != nil {
		return u, err
	}
	empty := ocispec.DescriptorEmptyJSON
	if ok, err := catalog.Blobs().Exists(ctx, empty); err != nil || !ok {
		if err := catalog.Blobs().Push(ctx, empty, bytes.NewReader(empty.Data)); err != nil {
			return u, fmt.Errorf("usage record of %s: empty blob: %w", u.Manifest, err)
		}
	}
	push := desc
	push.Annotations = nil
	if err := catalog.Manifests().Push(ctx, push, bytes.NewReader(body)); err != nil {
		return u, fmt.Errorf("usage record of %s: %w", u.Manifest, err)
	}
	u.Record = desc
	if len(u.Images) > MaxUsageImages {
		u.Images = slices.Clone(u.Images[:MaxUsageImages])
	}
	return u, nil
}

// DeleteManifest deletes a manifest (an index or a record) from a cache
// repository through the OCI API (DELETE /v2/<repo>/manifests/<digest>),
// which also removes it from its subject's referrers. A manifest already
// gone counts as deleted.
func DeleteManifest(ctx context.Context, manifests content.Deleter, d ocispec.Descriptor) error {
	if d.MediaType == "" {
		d.MediaType = ocispec.MediaTypeImageManifest
	}
	if err := manifests.Delete(ctx, d); err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete manifest %s: %w", d.Digest, err)
	}
	return nil
}

// Superseded returns the indexes of descs (one manifest's, as Indexes
// returns them) that no node should read any more, per platform: when
// keep accepts some of a platform's indexes (the settings wanted now),
// every one it does not; otherwise all but the newest, which is the one
// nodes take (Newest). A nil keep accepts none.
func Superseded(descs []ocispec.Descriptor, keep func(ocispec.Descriptor) bool) []ocispec.Descriptor {
	byPlatform := map[string][]ocispec.Descriptor{}
	var order []string
	for _, d := range Newest(slices.Clone(descs)) {
		p := d.Annotations[AnnotationPlatform]
		if _, ok := byPlatform[p]; !ok {
			order = append(order, p)
		}
		byPlatform[p] = append(byPlatform[p], d)
	}
	var out []ocispec.Descriptor
	for _, p := range order {
		group := byPlatform[p]
		kept := 0
		if keep != nil {
			for _, d := range group {
				if keep(d) {
					kept++
				}
			}
		}
		for i, d := range group {
			if kept > 0 && !keep(d) || kept == 0 && i > 0 {
				out = append(out, d)
			}
		}
	}
	return out
}

// Catalog returns a client for one of the cache's own repositories
// (ZtocCatalog, UsageCatalog), which no image maps to.
func (c Cache) Catalog(name string) (*remote.Repository, error) {
	if name != ZtocCatalog && name != UsageCatalog {
		return nil, fmt.Errorf("%w: %q is not a catalog of the cache", names.ErrInvalidName, name)
	}
	repo, err := remote.NewRepository(c.Host + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("cache catalog %q: %w", name, err)
	}
	repo.Client, repo.PlainHTTP = c.Client, c.PlainHTTP
	return repo, nil
}
