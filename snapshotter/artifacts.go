package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	socifs "github.com/awslabs/soci-snapshotter/fs"
	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/registry/artifacts"
)

// Source names, as they appear in logs, metrics and Resolution.Source.
const (
	SourceCache    = "cache"
	SourceUpstream = "upstream"
)

// findReferrer returns the SOCI v1 index of manifest in repo (the newest,
// when there are several), or an error wrapping ErrNoIndex.
func findReferrer(ctx context.Context, repo *remote.Repository, manifest digest.Digest) (ocispec.Descriptor, error) {
	desc, err := artifacts.FindIndex(ctx, repo, manifest, artifacts.Selector{})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", repo.Reference, err)
	}
	return desc, nil
}

// copyIndex copies the index desc and its zTOCs from repo into st with
// soci's own FetchSociArtifacts, so the local store looks exactly as if soci
// had fetched them (GC labels included). refLocator must name repo
// (host/repository), because soci resolves size-less descriptors through it.
func copyIndex(ctx context.Context, refLocator string, desc ocispec.Descriptor, st store.Store, repo *remote.Repository) (Index, error) {
	spec, err := reference.Parse(refLocator)
	if err != nil {
		return Index{}, fmt.Errorf("index repository %q: %w", refLocator, err)
	}
	idx, err := socifs.FetchSociArtifacts(ctx, spec, desc, st, repo)
	if err != nil {
		return Index{}, fmt.Errorf("copy SOCI index %s from %s: %w", desc.Digest, refLocator, err)
	}
	if len(idx.Blobs) == 0 {
		return Index{}, fmt.Errorf("%w: SOCI index %s in %s lists no zTOCs", ErrNoIndex, desc.Digest, refLocator)
	}
	return Index{Digest: desc.Digest, Layers: IndexedLayers(idx)}, nil
}

// IndexedLayers returns the image layers a SOCI index has zTOCs for.
func IndexedLayers(idx *soci.Index) map[digest.Digest]bool {
	m := map[digest.Digest]bool{}
	for _, b := range idx.Blobs {
		if d, err := digest.Parse(b.Annotations[soci.IndexAnnotationImageLayerDigest]); err == nil {
			m[d] = true
		}
	}
	return m
}

// describe turns a lookup error into the short reason a log line needs:
// refused, no response within respTimeout, not done within deadline, or the
// error itself.
func describe(err error, respTimeout, deadline time.Duration) error {
	var nerr net.Error
	switch {
	case err == nil, errors.Is(err, ErrNoIndex):
		return err
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("connection refused: %w", err)
	// context.DeadlineExceeded is a net.Error too, so it goes first.
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("not done within %s: %w", deadline, err)
	case errors.As(err, &nerr) && nerr.Timeout():
		return fmt.Errorf("no response within %s: %w", respTimeout, err)
	default:
		return err
	}
}
