package referrers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/registry/referrers"
)

func manifestDesc(i int, artifactType string) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(fmt.Sprint(i)), Size: 10, ArtifactType: artifactType}
}

func decode(t *testing.T, ix referrers.Index) ocispec.Index {
	t.Helper()
	var out ocispec.Index
	if err := json.Unmarshal(ix.Body, &out); err != nil {
		t.Fatalf("%s: %v", ix.Body, err)
	}
	if out.SchemaVersion != 2 || out.MediaType != ocispec.MediaTypeImageIndex || out.Manifests == nil || len(out.Manifests) != ix.Count {
		t.Fatalf("not a referrers index of %d: %s", ix.Count, ix.Body)
	}
	return out
}

func TestCacheLookup(t *testing.T) {
	ctx := context.Background()
	mem := referrers.NewMemory()
	c := referrers.NewCache(mem, referrers.CacheOptions{})
	subj := digest.FromString("s")
	const repo, soci = "docker.io/library/nginx", "application/vnd.amazon.soci.index.v1+json"

	ix, hit, err := c.Lookup(ctx, repo, subj, "")
	if err != nil || hit || ix.Count != 0 {
		t.Fatalf("first lookup = %+v, hit %v, %v", ix, hit, err)
	}
	decode(t, ix)
	if _, hit, _ := c.Lookup(ctx, repo, subj, ""); !hit {
		t.Errorf("second lookup missed the cache")
	}
	// A write through the cache is seen at once.
	if err := c.Put(ctx, repo, subj, manifestDesc(1, soci)); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, repo, subj, manifestDesc(2, "application/other")); err != nil {
		t.Fatal(err)
	}
	if ix, _, _ := c.Lookup(ctx, repo, subj, ""); ix.Count != 2 {
		t.Fatalf("after puts: %s", ix.Body)
	}
	ix, _, _ = c.Lookup(ctx, repo, subj, soci)
	if got := decode(t, ix); len(got.Manifests) != 1 || got.Manifests[0].ArtifactType != soci {
		t.Fatalf("filtered: %s", ix.Body)
	}
	ix, _, _ = c.Lookup(ctx, repo, subj, "application/none")
	decode(t, ix)
	if ix.Count != 0 {
		t.Fatalf("filter matching nothing: %s", ix.Body)
	}
	if err := c.Delete(ctx, repo, subj, manifestDesc(1, soci).Digest); err != nil {
		t.Fatal(err)
	}
	if ix, _, _ := c.Lookup(ctx, repo, subj, soci); ix.Count != 0 {
		t.Fatalf("after delete: %s", ix.Body)
	}

	// Writes elsewhere (another replica) show after TTL.
	shared := referrers.NewMemory()
	a := referrers.NewCache(shared, referrers.CacheOptions{TTL: 20 * time.Millisecond})
	b := referrers.NewCache(shared, referrers.CacheOptions{TTL: 20 * time.Millisecond})
	if ix, _, _ := a.Lookup(ctx, repo, subj, ""); ix.Count != 0 {
		t.Fatal(ix)
	}
	if err := b.Put(ctx, repo, subj, manifestDesc(3, soci)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ix, _, _ := a.Lookup(ctx, repo, subj, ""); ix.Count == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replica a never saw replica b's write")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCacheFilterAndEviction(t *testing.T) {
	ctx := context.Background()
	mem := referrers.NewMemory()
	c := referrers.NewCache(mem, referrers.CacheOptions{Size: 2, Filter: func(_ context.Context, _ string, ds []ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		var out []ocispec.Descriptor
		for _, d := range ds {
			if d.ArtifactType != "gone" {
				out = append(out, d)
			}
		}
		return out, nil
	}})
	subj := digest.FromString("s")
	_ = mem.Put(ctx, "r", subj, manifestDesc(1, "gone"))
	_ = mem.Put(ctx, "r", subj, manifestDesc(2, "kept"))
	ix, _, err := c.Lookup(ctx, "r", subj, "")
	if err != nil || ix.Count != 1 {
		t.Fatalf("filtered lookup = %s, %v", ix.Body, err)
	}
	decode(t, ix)
	for i := range 10 { // more subjects than Size: still correct answers
		if ix, _, err := c.Lookup(ctx, "r", digest.FromString(fmt.Sprint(i)), ""); err != nil || ix.Count != 0 {
			t.Fatal(ix, err)
		}
	}
}

// A read that overlaps a write must not leave the pre-write set cached.
func TestCacheNoStaleAfterConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	c := referrers.NewCache(referrers.NewMemory(), referrers.CacheOptions{})
	subj := digest.FromString("s")
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(2)
		go func() { defer wg.Done(); _ = c.Put(ctx, "r", subj, manifestDesc(i, "t")) }()
		go func() { defer wg.Done(); _, _, _ = c.Lookup(ctx, "r", subj, "t") }()
	}
	wg.Wait()
	if ix, _, _ := c.Lookup(ctx, "r", subj, "t"); ix.Count != n {
		t.Fatalf("after %d concurrent puts the cache answers %d", n, ix.Count)
	}
}
