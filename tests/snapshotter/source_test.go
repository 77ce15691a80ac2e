package snapshotter_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/registry/names"
	"github.com/hermes-oci/hermes/snapshotter"
	"github.com/hermes-oci/hermes/snapshotter/sourcetest"
)

// TestCacheSourceConformance runs the index-source conformance suite (which
// the in-memory source used by unit tests also passes) against the cache
// source reading a real hermes-registry.
func TestCacheSourceConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T) sourcetest.Target {
		reg := startCacheRegistry(t)
		st, err := store.NewSociStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		src, err := snapshotter.NewCacheRegistry(snapshotter.CacheRegistryOptions{URL: reg.URL, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		repo := func(ref string) string {
			named, err := names.ParseReference(ref)
			if err != nil {
				t.Fatal(err)
			}
			return names.Repository(named)
		}
		return sourcetest.Target{
			Source: src, Store: st,
			Ref:     func(name string) string { return "registry.example.com:5000/team/" + name + ":v1" },
			Publish: func(t *testing.T, ref string, a sourcetest.Artifact) { pushArtifact(t, reg.Host+"/"+repo(ref), a) },
			Corrupt: func(t *testing.T, _ string, d digest.Digest) { corruptBlob(t, reg.Root, d) },
		}
	})
}

// pushArtifact pushes a SOCI index and its blobs to repository locator.
func pushArtifact(t *testing.T, locator string, a sourcetest.Artifact) {
	t.Helper()
	ctx := context.Background()
	rp, err := remote.NewRepository(locator)
	if err != nil {
		t.Fatal(err)
	}
	rp.PlainHTTP = true
	var idx soci.Index
	if err := soci.UnmarshalIndex(a.Index, &idx); err != nil {
		t.Fatal(err)
	}
	empty := []byte("{}")
	blobs := map[digest.Digest][]byte{digest.FromBytes(empty): empty}
	for d, b := range a.Blobs {
		blobs[d] = b
	}
	for d, b := range blobs {
		if err := rp.Blobs().Push(ctx, ocispec.Descriptor{Digest: d, Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
			t.Fatalf("push blob %s: %v", d, err)
		}
	}
	if err := rp.Manifests().Push(ctx, a.IndexDesc, bytes.NewReader(a.Index)); err != nil {
		t.Fatalf("push index: %v", err)
	}
}
