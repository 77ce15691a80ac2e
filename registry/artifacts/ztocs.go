package artifacts

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The zTOC catalog: a layer shared by many images (a base image's) is
// indexed once. A zTOC depends only on the layer's bytes and the build
// settings, so each zTOC a build makes is recorded in one repository of the
// cache, ZtocCatalog, as a small manifest whose subject is the layer blob;
// a later build of any image with that layer finds the record through the
// Referrers API of the layer digest and mounts the zTOC into its own
// repository instead of fetching and indexing the layer again.
//
//	<cache>/hermes/ztocs
//	├── manifests/<record digest>   artifactType ZtocRecordType,
//	│                               subject = the layer blob, layers = [the zTOC],
//	│                               annotations: settings, build tool, xattrs verdict
//	├── blobs/<zTOC digest>         (a link: distribution stores each blob once)
//	└── /referrers/<layer digest>?artifactType=ZtocRecordType
const (
	// ZtocCatalog is the catalog's repository. No image maps to it: every
	// image's cache repository starts with a registry host, and "hermes"
	// alone never parses as one.
	ZtocCatalog = "hermes/ztocs"
	// ZtocRecordType is the artifactType of a catalog record.
	ZtocRecordType = "application/vnd.hermes.ztoc.record.v1+json"
	// AnnotationDisableXattrs on a record: soci's xattr verdict for the
	// layer ("true" when it has no extended attributes).
	AnnotationDisableXattrs = "dev.hermes.ztoc.disable-xattrs"
)

// ZtocRecord is a catalog entry.
type ZtocRecord struct {
	// Ztoc is the zTOC blob, in the catalog repository.
	Ztoc ocispec.Descriptor
	// DisableXattrs is soci's xattr verdict for the layer.
	DisableXattrs bool
}

// FindZtoc returns the newest record of layer built with settings and
// buildTool in catalog, or an error wrapping ErrNoIndex.
func FindZtoc(ctx context.Context, catalog Referrers, layer digest.Digest, settings, buildTool string) (ZtocRecord, error) {
	if err := layer.Validate(); err != nil {
		return ZtocRecord{}, fmt.Errorf("layer digest %q: %w", layer, err)
	}
	var descs []ocispec.Descriptor
	err := catalog.Referrers(ctx, ocispec.Descriptor{Digest: layer}, ZtocRecordType, func(refs []ocispec.Descriptor) error {
		for _, d := range refs {
			if d.ArtifactType == ZtocRecordType && d.Annotations[AnnotationSettings] == settings && d.Annotations[AnnotationBuildTool] == buildTool {
				descs = append(descs, d)
			}
		}
		return nil
	})
	if IsNotFound(err) || err == nil && len(descs) == 0 {
		return ZtocRecord{}, fmt.Errorf("%w: no zTOC of layer %s with these settings in the catalog", ErrNoIndex, layer)
	}
	if err != nil {
		return ZtocRecord{}, fmt.Errorf("catalog referrers of %s: %w", layer, err)
	}
	d := Newest(descs)[0]
	if d.Size > maxIndexManifest {
		return ZtocRecord{}, fmt.Errorf("zTOC record %s of %d bytes", d.Digest, d.Size)
	}
	rc, err := catalog.Fetch(ctx, d)
	if err != nil {
		return ZtocRecord{}, fmt.Errorf("zTOC record %s: %w", d.Digest, err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, maxIndexManifest+1))
	if err != nil {
		return ZtocRecord{}, fmt.Errorf("zTOC record %s: %w", d.Digest, err)
	}
	if digest.FromBytes(body) != d.Digest {
		return ZtocRecord{}, fmt.Errorf("zTOC record %s: content does not match its digest", d.Digest)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil || len(m.Layers) != 1 || m.Layers[0].Digest.Validate() != nil {
		return ZtocRecord{}, fmt.Errorf("zTOC record %s is not a manifest with one zTOC", d.Digest)
	}
	return ZtocRecord{Ztoc: m.Layers[0], DisableXattrs: m.Annotations[AnnotationDisableXattrs] == "true"}, nil
}

// NewZtocRecord returns the record manifest for a zTOC of layer, as
// stored in the catalog; config is the empty JSON descriptor.
func NewZtocRecord(layer, ztoc, config ocispec.Descriptor, settings, buildTool, created string, disableXattrs bool) ([]byte, ocispec.Descriptor, error) {
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ZtocRecordType,
		Config:       config,
		Layers:       []ocispec.Descriptor{ztoc},
		Subject:      &ocispec.Descriptor{MediaType: layer.MediaType, Digest: layer.Digest, Size: layer.Size},
		Annotations: map[string]string{
			AnnotationSettings: settings, AnnotationBuildTool: buildTool, AnnotationCreated: created,
			AnnotationDisableXattrs: fmt.Sprint(disableXattrs),
		},
	}
	m.SchemaVersion = 2
	body, err := json.Marshal(m)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return body, ocispec.Descriptor{MediaType: m.MediaType, ArtifactType: ZtocRecordType, Digest: digest.FromBytes(body), Size: int64(len(body))}, nil
}
