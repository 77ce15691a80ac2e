package referrers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

	ix, hit, err := c.Lookup(ctx, repo, subj, referrers.Query{})
	if err != nil || hit || ix.Count != 0 {
		t.Fatalf("first lookup = %+v, hit %v, %v", ix, hit, err)
	}
	decode(t, ix.Index)
	if _, hit, _ := c.Lookup(ctx, repo, subj, referrers.Query{}); !hit {
		t.Errorf("second lookup missed the cache")
	}
	// A write through the cache is seen at once.
	if err := c.Put(ctx, repo, subj, manifestDesc(1, soci)); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, repo, subj, manifestDesc(2, "application/other")); err != nil {
		t.Fatal(err)
	}
	if ix, _, _ := c.Lookup(ctx, repo, subj, referrers.Query{}); ix.Count != 2 {
		t.Fatalf("after puts: %s", ix.Body)
	}
	ix, _, _ = c.Lookup(ctx, repo, subj, referrers.Query{ArtifactType: soci})
	if got := decode(t, ix.Index); len(got.Manifests) != 1 || got.Manifests[0].ArtifactType != soci {
		t.Fatalf("filtered: %s", ix.Body)
	}
	ix, _, _ = c.Lookup(ctx, repo, subj, referrers.Query{ArtifactType: "application/none"})
	decode(t, ix.Index)
	if ix.Count != 0 {
		t.Fatalf("filter matching nothing: %s", ix.Body)
	}
	if err := c.Delete(ctx, repo, subj, manifestDesc(1, soci).Digest); err != nil {
		t.Fatal(err)
	}
	if ix, _, _ := c.Lookup(ctx, repo, subj, referrers.Query{ArtifactType: soci}); ix.Count != 0 {
		t.Fatalf("after delete: %s", ix.Body)
	}

	// Writes elsewhere (another replica) show after TTL.
	shared := referrers.NewMemory()
	a := referrers.NewCache(shared, referrers.CacheOptions{TTL: 20 * time.Millisecond})
	b := referrers.NewCache(shared, referrers.CacheOptions{TTL: 20 * time.Millisecond})
	if ix, _, _ := a.Lookup(ctx, repo, subj, referrers.Query{}); ix.Count != 0 {
		t.Fatal(ix)
	}
	if err := b.Put(ctx, repo, subj, manifestDesc(3, soci)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ix, _, _ := a.Lookup(ctx, repo, subj, referrers.Query{}); ix.Count == 1 {
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
	ix, _, err := c.Lookup(ctx, "r", subj, referrers.Query{})
	if err != nil || ix.Count != 1 {
		t.Fatalf("filtered lookup = %s, %v", ix.Body, err)
	}
	decode(t, ix.Index)
	for i := range 10 { // more subjects than Size: still correct answers
		if ix, _, err := c.Lookup(ctx, "r", digest.FromString(fmt.Sprint(i)), referrers.Query{}); err != nil || ix.Count != 0 {
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
		go func() { defer wg.Done(); _, _, _ = c.Lookup(ctx, "r", subj, referrers.Query{ArtifactType: "t"}) }()
	}
	wg.Wait()
	if ix, _, _ := c.Lookup(ctx, "r", subj, referrers.Query{ArtifactType: "t"}); ix.Count != n {
		t.Fatalf("after %d concurrent puts the cache answers %d", n, ix.Count)
	}
}

// heldStore is a Store whose first List reads the set and then waits for
// release before answering: a read held in flight while the test writes.
type heldStore struct {
	referrers.Store
	listed  chan struct{} // closed once the first List has read the set
	release chan struct{} // closed by the test to let that List answer
	calls   atomic.Int32
}

func (s *heldStore) List(ctx context.Context, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	descs, err := s.Store.List(ctx, repo, subject)
	if s.calls.Add(1) == 1 {
		close(s.listed)
		<-s.release
	}
	return descs, err
}

// A lookup that starts after a Put returned must see the referrer, even
// while a read of the same subject that started before the Put is still in
// flight: it must not join that read and answer the older set.
func TestCacheLookupAfterPutNeverJoinsOlderRead(t *testing.T) {
	ctx := context.Background()
	store := &heldStore{Store: referrers.NewMemory(), listed: make(chan struct{}), release: make(chan struct{})}
	c := referrers.NewCache(store, referrers.CacheOptions{})
	const repo = "docker.io/library/app"
	subj := digest.FromString("s")
	type result struct {
		ix  referrers.Index
		err error
	}
	lookup := func() <-chan result {
		ch := make(chan result, 1)
		go func() {
			ix, _, err := c.Lookup(ctx, repo, subj, referrers.Query{})
			ch <- result{ix.Index, err}
		}()
		return ch
	}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(store.release) }) }
	defer release()

	before := lookup() // its read of the (empty) set is held open
	<-store.listed
	if err := c.Put(ctx, repo, subj, manifestDesc(1, "t")); err != nil {
		t.Fatal(err)
	}
	after := lookup()
	select {
	case r := <-after:
		if r.err != nil || r.ix.Count != 1 {
			t.Fatalf("lookup after the Put = %s, %v; want the new referrer", r.ix.Body, r.err)
		}
	case <-time.After(5 * time.Second):
		// It is waiting for the read that started before the Put.
		release()
		r := <-after
		t.Fatalf("lookup after the Put joined the read that started before it: answered %d referrers, want 1", r.ix.Count)
	}
	release()
	if r := <-before; r.err != nil || r.ix.Count > 1 { // it overlapped the Put: either set is right
		t.Fatalf("lookup overlapping the Put = %s, %v", r.ix.Body, r.err)
	}
	// The older read must not have been left in the cache either.
	if ix, _, err := c.Lookup(ctx, repo, subj, referrers.Query{}); err != nil || ix.Count != 1 {
		t.Fatalf("lookup after both = %s, %v; want the new referrer", ix.Body, err)
	}
}

// TestCachePages reads long referrer sets page by page: every page is a
// valid index within the count and byte bounds, the pages together are the
// whole set in digest order, once each, filtered or not, and any marker a
// client sends starts after itself, so paging always ends.
func TestCachePages(t *testing.T) {
	ctx := context.Background()
	mem := referrers.NewMemory()
	subj := digest.FromString("s")
	const repo, n, pageSize, pageBytes = "r", 25, 4, 900
	want := map[string][]digest.Digest{}
	for i := range n {
		d := manifestDesc(i, []string{"a", "b"}[i%2])
		d.Annotations = map[string]string{"note": strings.Repeat("x", i*10)}
		if i == 7 {
			d.Annotations["big"] = strings.Repeat("y", 2*pageBytes) // a page of its own
		}
		if err := mem.Put(ctx, repo, subj, d); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := mem.List(ctx, repo, subj)
	for _, d := range all {
		want[""] = append(want[""], d.Digest)
		want[d.ArtifactType] = append(want[d.ArtifactType], d.Digest)
	}
	c := referrers.NewCache(mem, referrers.CacheOptions{PageSize: pageSize, PageBytes: pageBytes})

	walk := func(q referrers.Query, limit int) []digest.Digest {
		t.Helper()
		var got []digest.Digest
		for pages := 0; ; pages++ {
			if pages > n {
				t.Fatalf("%+v: more pages than referrers", q)
			}
			p, _, err := c.Lookup(ctx, repo, subj, q)
			if err != nil {
				t.Fatal(err)
			}
			ix := decode(t, p.Index)
			if p.Count > limit || (p.Count > 1 && len(p.Body) > pageBytes) || (p.Count == 0 && p.Next != "") {
				t.Fatalf("%+v: page of %d referrers in %d bytes, next %q; want at most %d in %d bytes", q, p.Count, len(p.Body), p.Next, limit, pageBytes)
			}
			for _, d := range ix.Manifests {
				if q.ArtifactType != "" && d.ArtifactType != q.ArtifactType {
					t.Fatalf("%+v: page holds a %q referrer", q, d.ArtifactType)
				}
				got = append(got, d.Digest)
			}
			if p.Next == "" {
				return got
			}
			if p.Next != got[len(got)-1] {
				t.Fatalf("%+v: next %s is not the page's last referrer %s", q, p.Next, got[len(got)-1])
			}
			q.After = p.Next
		}
	}
	for _, q := range []referrers.Query{{}, {ArtifactType: "a"}, {ArtifactType: "b"}, {Limit: 2}, {ArtifactType: "a", Limit: 3}, {Limit: 1000}} {
		limit := pageSize
		if q.Limit > 0 && q.Limit < pageSize {
			limit = q.Limit
		}
		if got := walk(q, limit); !slices.Equal(got, want[q.ArtifactType]) {
			t.Errorf("%+v: pages list %d referrers %v, want %d %v", q, len(got), got, len(want[q.ArtifactType]), want[q.ArtifactType])
		}
	}
	// Markers a client made up: any digest starts after itself; one past
	// the end, or of another algorithm sorting after sha256, is an empty
	// last page.
	madeUp := digest.FromString("not a referrer")
	var after []digest.Digest
	for _, d := range want[""] {
		if d > madeUp {
			after = append(after, d)
		}
	}
	if len(after) == 0 || len(after) == n {
		t.Fatalf("marker %s sorts outside the set; pick another", madeUp)
	}
	if got := walk(referrers.Query{After: madeUp}, pageSize); !slices.Equal(got, after) {
		t.Errorf("after %s: %v, want %v", madeUp, got, after)
	}
	for _, after := range []digest.Digest{"sha256:" + digest.Digest(strings.Repeat("f", 64)), digest.SHA512.FromString("x")} {
		p, _, err := c.Lookup(ctx, repo, subj, referrers.Query{After: after})
		if err != nil || p.Count != 0 || p.Next != "" {
			t.Errorf("after %s: %d referrers, next %q, %v; want an empty last page", after, p.Count, p.Next, err)
		}
		decode(t, p.Index)
	}
}
