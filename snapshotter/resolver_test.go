package snapshotter_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/snapshotter"
	"github.com/hermes-oci/hermes/snapshotter/sourcetest"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type recorder struct {
	mu       sync.Mutex
	outcomes []snapshotter.Outcome
}

func (r *recorder) Resolved(res snapshotter.Resolution) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outcomes = append(r.outcomes, res.Outcome)
}
func (r *recorder) SourceDone(string, error, time.Duration) {}

type fixture struct {
	cache, upstream *sourcetest.Memory
	clock           *clock
	rec             *recorder
	r               *snapshotter.Resolver
}

func newFixture(t *testing.T) *fixture {
	st := newSociStore(t)
	f := &fixture{
		cache:    sourcetest.NewMemory(snapshotter.SourceCache, st),
		upstream: sourcetest.NewMemory(snapshotter.SourceUpstream, st),
		clock:    &clock{now: time.Unix(1_700_000_000, 0)},
		rec:      &recorder{},
	}
	f.r = snapshotter.NewResolver(snapshotter.ResolverOptions{NegativeTTL: 30 * time.Second, Observer: f.rec, Now: f.clock.Now}, f.cache, f.upstream)
	return f
}

const testRef = "registry.example.com/team/app:v1"

func image(name string) (snapshotter.Image, ocispec.Descriptor) {
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(name), Size: 10}
	return snapshotter.Image{Ref: testRef, Manifest: d.Digest}, d
}

func TestResolverOrder(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)

	imgC, subC := image("in-cache")
	inCache := sourcetest.NewArtifact(t, subC, 1)
	f.cache.Publish(testRef, inCache)
	f.upstream.Publish(testRef, sourcetest.NewArtifact(t, subC, 2))
	if res := f.r.Resolve(ctx, imgC); res.Outcome != snapshotter.OutcomeCacheHit || res.Index.Digest != inCache.IndexDesc.Digest || res.Source != snapshotter.SourceCache {
		t.Errorf("index in cache and upstream: got %+v, want the cache's", res)
	}

	imgU, subU := image("upstream-only")
	up := sourcetest.NewArtifact(t, subU, 1)
	f.upstream.Publish(testRef, up)
	res := f.r.Resolve(ctx, imgU)
	if res.Outcome != snapshotter.OutcomeUpstream || res.Index.Digest != up.IndexDesc.Digest {
		t.Errorf("index only upstream: got %+v", res)
	}
	if !strings.Contains(res.Reason, "cache:") {
		t.Errorf("reason %q does not say why the cache had none", res.Reason)
	}

	imgN, _ := image("nowhere")
	if res := f.r.Resolve(ctx, imgN); res.Outcome != snapshotter.OutcomeNone || res.Lazy() {
		t.Errorf("no index anywhere: got %+v", res)
	}

	f.cache.FailWith(errors.New("connection refused"))
	imgE, _ := image("cache-down")
	res = f.r.Resolve(ctx, imgE)
	if res.Outcome != snapshotter.OutcomeError || res.Lazy() || !strings.Contains(res.Reason, "connection refused") {
		t.Errorf("cache failing, nothing upstream: got %+v", res)
	}

	imgF, subF := image("cache-down-upstream-has")
	upF := sourcetest.NewArtifact(t, subF, 1)
	f.upstream.Publish(testRef, upF)
	if res := f.r.Resolve(ctx, imgF); res.Outcome != snapshotter.OutcomeUpstream || res.Index.Digest != upF.IndexDesc.Digest {
		t.Errorf("cache failing, index upstream: got %+v", res)
	}
	want := []snapshotter.Outcome{snapshotter.OutcomeCacheHit, snapshotter.OutcomeUpstream, snapshotter.OutcomeNone, snapshotter.OutcomeError, snapshotter.OutcomeUpstream}
	if strings.Join(outcomes(f.rec.outcomes), ",") != strings.Join(outcomes(want), ",") {
		t.Errorf("observed %v, want %v", f.rec.outcomes, want)
	}
}

func outcomes(o []snapshotter.Outcome) []string {
	s := make([]string, len(o))
	for i := range o {
		s[i] = string(o[i])
	}
	return s
}

func TestResolverRemembers(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	img, sub := image("img")

	// Negative answers last NegativeTTL.
	if res := f.r.Resolve(ctx, img); res.Lazy() {
		t.Fatalf("got %+v before publishing", res)
	}
	a := sourcetest.NewArtifact(t, sub, 1)
	f.cache.Publish(testRef, a)
	f.clock.Add(29 * time.Second)
	if res := f.r.Resolve(ctx, img); res.Lazy() {
		t.Fatalf("negative answer forgotten before its TTL: %+v", res)
	}
	if n := f.cache.Calls.Load(); n != 1 {
		t.Fatalf("cache asked %d times within the TTL, want 1", n)
	}
	f.clock.Add(time.Second)
	if res := f.r.Resolve(ctx, img); !res.Lazy() {
		t.Fatalf("after the TTL the new index is not found: %+v", res)
	}

	// Positive answers stay, even when the source goes away.
	f.cache.FailWith(errors.New("down"))
	f.clock.Add(24 * time.Hour)
	if res := f.r.Resolve(ctx, img); !res.Lazy() || res.Index.Digest != a.IndexDesc.Digest {
		t.Fatalf("positive answer lost: %+v", res)
	}
	if n := f.cache.Calls.Load(); n != 2 {
		t.Fatalf("cache asked %d times, want 2", n)
	}
	f.r.Forget(img.Manifest)
	if res := f.r.Resolve(ctx, img); res.Lazy() {
		t.Fatalf("after Forget the answer should come from the (failing) sources: %+v", res)
	}
}

func TestResolverOneLookupInFlight(t *testing.T) {
	f := newFixture(t)
	img, sub := image("img")
	a := sourcetest.NewArtifact(t, sub, 1)
	f.cache.Publish(testRef, a)
	release := f.cache.Hold()

	// The first caller gives up; the lookup it started still answers the rest.
	first, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	results := make(chan snapshotter.Resolution, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		ctx := context.Background()
		if i == 0 {
			ctx = first
		}
		go func() { defer wg.Done(); results <- f.r.Resolve(ctx, img) }()
	}
	for f.cache.Calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	release()
	wg.Wait()
	close(results)
	for res := range results {
		if res.Index.Digest != a.IndexDesc.Digest {
			t.Errorf("got %+v", res)
		}
	}
	if n := f.cache.Calls.Load(); n != 1 {
		t.Errorf("%d lookups for one manifest, want 1", n)
	}
}

func TestResolverNoSources(t *testing.T) {
	r := snapshotter.NewResolver(snapshotter.ResolverOptions{})
	img, _ := image("img")
	if res := r.Resolve(context.Background(), img); res.Outcome != snapshotter.OutcomeNone || res.Reason == "" {
		t.Fatalf("got %+v", res)
	}
}

func TestResolverEvicts(t *testing.T) {
	st := newSociStore(t)
	src := sourcetest.NewMemory(snapshotter.SourceCache, st)
	r := snapshotter.NewResolver(snapshotter.ResolverOptions{MaxEntries: 2}, src)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "a"} {
		img, _ := image(n)
		r.Resolve(ctx, img)
	}
	// a was evicted by c, so it is asked again: 4 lookups.
	if n := src.Calls.Load(); n != 4 {
		t.Fatalf("%d lookups, want 4", n)
	}
}
