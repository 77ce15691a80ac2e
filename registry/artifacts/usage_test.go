package artifacts_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/registry/artifacts"
)

// TestUsageRecords: records put in the cache are listed with what they
// say; a replaced record is deleted through the OCI API and no longer
// listed; deleting what is gone is not an error.
func TestUsageRecords(t *testing.T) {
	ctx := context.Background()
	cache, _ := inMemoryCache(t)
	catalog, err := cache.Catalog(artifacts.UsageCatalog)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Catalog("docker.io/library/nginx"); err == nil {
		t.Error("Catalog of an image repository: no error")
	}
	if got, bad, err := artifacts.Usages(ctx, catalog); err != nil || len(got) != 0 || len(bad) != 0 {
		t.Fatalf("empty catalog: %v %v %v", got, bad, err)
	}
	when := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	a := artifacts.Usage{Repository: "docker.io/library/nginx", Manifest: digest.FromString("a"), Images: []string{"docker.io/library/nginx:1.27"},
		InUse: true, LastUsed: when, Retention: 168 * time.Hour}
	b := artifacts.Usage{Repository: "ghcr.io/org/app", Manifest: digest.FromString("b"), Images: []string{"ghcr.io/org/app:v1"}, LastUsed: when, Retention: time.Second}
	pa, err := artifacts.PutUsage(ctx, catalog, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := artifacts.PutUsage(ctx, catalog, b); err != nil {
		t.Fatal(err)
	}
	if _, err := artifacts.PutUsage(ctx, catalog, artifacts.Usage{Repository: "x"}); err == nil {
		t.Error("a record without a manifest: no error")
	}
	// a stops being used: a new record, then the old one goes.
	a2 := a
	a2.InUse, a2.LastUsed = false, when.Add(time.Hour)
	if _, err := artifacts.PutUsage(ctx, catalog, a2); err != nil {
		t.Fatal(err)
	}
	if err := artifacts.DeleteManifest(ctx, catalog.Manifests(), pa.Record); err != nil {
		t.Fatal(err)
	}
	if err := artifacts.DeleteManifest(ctx, catalog.Manifests(), pa.Record); err != nil {
		t.Errorf("deleting it again: %v", err)
	}
	got, _, err := artifacts.Usages(ctx, catalog)
	if err != nil || len(got) != 2 {
		t.Fatalf("Usages = %+v, %v", got, err)
	}
	slices.SortFunc(got, func(x, y artifacts.Usage) int { return strings.Compare(x.Repository, y.Repository) })
	g := got[0]
	if g.Repository != a.Repository || g.Manifest != a.Manifest || g.InUse || !g.LastUsed.Equal(a2.LastUsed) || g.Retention != a.Retention || !slices.Equal(g.Images, a.Images) {
		t.Errorf("record of a = %+v", g)
	}
	if got[1].Retention != time.Second || got[1].InUse {
		t.Errorf("record of b = %+v", got[1])
	}
}

func TestSuperseded(t *testing.T) {
	at := func(hex byte, created, platform, settings string) ocispec.Descriptor {
		d := desc(hex, created)
		d.Annotations[artifacts.AnnotationPlatform] = platform
		d.Annotations[artifacts.AnnotationSettings] = settings
		return d
	}
	old := at('1', "2026-11-01T00:00:00Z", "linux/amd64", "span=1")
	mid := at('2', "2026-11-02T00:00:00Z", "linux/amd64", "span=2")
	newest := at('3', "2026-11-03T00:00:00Z", "linux/amd64", "span=3")
	arm := at('4', "2026-11-01T00:00:00Z", "linux/arm64", "span=1")
	digests := func(ds []ocispec.Descriptor) []digest.Digest {
		var out []digest.Digest
		for _, d := range ds {
			out = append(out, d.Digest)
		}
		slices.Sort(out)
		return out
	}
	all := []ocispec.Descriptor{old, arm, newest, mid}
	// Nothing wanted: the newest of each platform stays.
	if got := digests(artifacts.Superseded(all, nil)); !slices.Equal(got, []digest.Digest{old.Digest, mid.Digest}) {
		t.Errorf("Superseded(nil) = %v", got)
	}
	// The settings wanted now stay, even when older; the rest of that
	// platform goes; a platform with none wanted keeps its newest.
	keep := func(d ocispec.Descriptor) bool { return d.Annotations[artifacts.AnnotationSettings] == "span=2" }
	if got := digests(artifacts.Superseded(all, keep)); !slices.Equal(got, []digest.Digest{old.Digest, newest.Digest}) {
		t.Errorf("Superseded(span=2) = %v", got)
	}
	if got := artifacts.Superseded([]ocispec.Descriptor{old}, nil); len(got) != 0 {
		t.Errorf("one index superseded: %v", got)
	}
}
