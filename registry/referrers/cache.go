package referrers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"
)

// Filter drops descriptors from a stored referrer set before it is served,
// for example referrers whose manifest is gone. It runs on cache misses only.
type Filter func(ctx context.Context, repo string, descs []ocispec.Descriptor) ([]ocispec.Descriptor, error)

// CacheOptions configures a Cache.
type CacheOptions struct {
	// TTL bounds how long a cached set is trusted. Writes through this Cache
	// invalidate at once; TTL only matters for writes by other replicas over
	// shared storage. Zero keeps sets until they are written or evicted.
	TTL time.Duration
	// Size is the most subjects kept in memory; 0 means 65536.
	Size int
	// Filter, if set, runs on every set read from the Store.
	Filter Filter
	// PageSize is the most referrers in one page of an answer; 0 means
	// DefaultPageSize.
	PageSize int
	// PageBytes bounds the body of one page; 0 means DefaultPageBytes. A
	// page holds at least one referrer, whatever its size.
	PageBytes int
}

// Page bounds by default. A client reads a long list page by page (the
// Referrers API's Link header); oras-go, which oras and Hermes' snapshotter
// use, refuses an answer over 4 MiB, so a page stays well under that.
const (
	DefaultPageSize  = 1000
	DefaultPageBytes = 1 << 20
)

// Index is a rendered Referrers API answer.
type Index struct {
	Body  []byte // an application/vnd.oci.image.index.v1+json document
	Count int    // descriptors in Body
}

// Query selects one page of a subject's referrers.
type Query struct {
	// ArtifactType, if set, keeps only referrers of that type.
	ArtifactType string
	// After starts the page after this referrer digest: the Next of the
	// page before. Referrers are ordered by digest, so any digest is a
	// valid starting point, and the next page always starts further on.
	After digest.Digest
	// Limit is the most referrers in the page; 0, or more than the cache's
	// PageSize, means PageSize.
	Limit int
}

// Page is one page of a Referrers API answer.
type Page struct {
	Index
	// Next is the digest of the last referrer in Body when more follow (the
	// After of the next page); empty on the last page.
	Next digest.Digest
}

// Cache is a Store that answers List and Lookup from memory, keeping sets
// read from the underlying Store until a write through it changes them.
type Cache struct {
	store Store
	opts  CacheOptions
	group singleflight.Group

	mu      sync.Mutex
	writes  uint64 // bumped by every write; a read started before a write is neither cached nor joined by later lookups
	entries map[string]*cached
}

type cached struct {
	descs   []ocispec.Descriptor
	all     *view
	byType  map[string]*view
	expires time.Time // zero: never
}

// view is a referrer set, all of a subject's or those of one artifactType,
// ready to answer pages of.
type view struct {
	digests []digest.Digest // sorted
	raw     [][]byte        // descriptor JSON, parallel to digests
	first   Page            // the page from the start with the default limit
}

var _ Store = (*Cache)(nil)

// NewCache returns a Cache over store.
func NewCache(store Store, opts CacheOptions) *Cache {
	if opts.Size <= 0 {
		opts.Size = 1 << 16
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.PageBytes <= 0 {
		opts.PageBytes = DefaultPageBytes
	}
	return &Cache{store: store, opts: opts, entries: map[string]*cached{}}
}

func cacheKey(repo string, subject digest.Digest) string { return repo + "@" + string(subject) }

func (c *Cache) invalidate(repo string, subject digest.Digest) {
	c.mu.Lock()
	c.writes++
	delete(c.entries, cacheKey(repo, subject))
	c.mu.Unlock()
}

func (c *Cache) Put(ctx context.Context, repo string, subject digest.Digest, desc ocispec.Descriptor) error {
	err := c.store.Put(ctx, repo, subject, desc)
	// Invalidate even on error: the write may have happened.
	c.invalidate(repo, subject)
	return err
}

func (c *Cache) Delete(ctx context.Context, repo string, subject, referrer digest.Digest) error {
	err := c.store.Delete(ctx, repo, subject, referrer)
	c.invalidate(repo, subject)
	return err
}

func (c *Cache) List(ctx context.Context, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	e, _, err := c.get(ctx, repo, subject)
	if err != nil {
		return nil, err
	}
	return append(make([]ocispec.Descriptor, 0, len(e.descs)), e.descs...), nil
}

// Lookup returns the page of the Referrers API answer for subject in repo
// that q selects, and whether it came from memory.
func (c *Cache) Lookup(ctx context.Context, repo string, subject digest.Digest, q Query) (Page, bool, error) {
	e, hit, err := c.get(ctx, repo, subject)
	if err != nil {
		return Page{}, hit, err
	}
	v := e.all
	if q.ArtifactType != "" {
		if v = e.byType[q.ArtifactType]; v == nil {
			return Page{Index: emptyIndex}, hit, nil
		}
	}
	limit := c.opts.PageSize
	if q.Limit > 0 && q.Limit < limit {
		limit = q.Limit
	}
	if q.After == "" && limit == c.opts.PageSize {
		return v.first, hit, nil // the hot path: rendered once
	}
	return v.page(q.After, limit, c.opts.PageBytes), hit, nil
}

func (c *Cache) get(ctx context.Context, repo string, subject digest.Digest) (*cached, bool, error) {
	if err := check(repo, subject); err != nil {
		return nil, false, err
	}
	key := cacheKey(repo, subject)
	now := time.Now()
	c.mu.Lock()
	e, ok := c.entries[key]
	gen := c.writes
	c.mu.Unlock()
	if ok && (e.expires.IsZero() || now.Before(e.expires)) {
		return e, true, nil
	}
	// Callers share one read; one caller's cancellation must not fail the others.
	ctx = context.WithoutCancel(ctx)
	// The flight is keyed by the write generation the lookup started at,
	// not by the subject alone: a lookup that starts after a write must
	// never join a read that started before it and may have missed it.
	// Writes are rare next to lookups, so the generation is one counter for
	// the whole cache rather than one per subject (which would need its
	// own bounded map): a write costs lookups of other subjects in flight
	// at that moment at most one extra read each.
	v, err, _ := c.group.Do(key+"\x00"+strconv.FormatUint(gen, 10), func() (any, error) {
		descs, err := c.store.List(ctx, repo, subject)
		if err == nil && c.opts.Filter != nil {
			descs, err = c.opts.Filter(ctx, repo, descs)
		}
		if err != nil {
			return nil, err
		}
		e, err := c.render(descs)
		if err != nil {
			return nil, err
		}
		if c.opts.TTL > 0 {
			e.expires = time.Now().Add(c.opts.TTL)
		}
		c.mu.Lock()
		if c.writes == gen {
			if len(c.entries) >= c.opts.Size {
				for k := range c.entries { // Go's map order: an arbitrary victim
					delete(c.entries, k)
					break
				}
			}
			c.entries[key] = e
		}
		c.mu.Unlock()
		return e, nil
	})
	if err != nil {
		return nil, false, err
	}
	return v.(*cached), false, nil
}

// An index body is indexHead, the descriptors' JSON joined by commas, and
// indexTail: what encoding/json writes for an ocispec.Index with only
// schemaVersion, mediaType and manifests set.
const (
	indexHead = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`
	indexTail = `]}`
)

var emptyIndex = Index{Body: []byte(indexHead + indexTail)}

// render encodes every descriptor once and prepares the first page of the
// whole set and of every artifactType present, so a lookup of a first page
// never encodes JSON.
func (c *Cache) render(descs []ocispec.Descriptor) (*cached, error) {
	descs = slices.Clone(descs)
	sortByDigest(descs) // Stores list by digest; pages rely on it, so make sure
	all := &view{digests: make([]digest.Digest, len(descs)), raw: make([][]byte, len(descs))}
	byType := map[string]*view{}
	for i, d := range descs {
		b, err := json.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("encode referrer %s: %w", d.Digest, err)
		}
		all.digests[i], all.raw[i] = d.Digest, b
		t := byType[d.ArtifactType]
		if t == nil {
			t = &view{}
			byType[d.ArtifactType] = t
		}
		t.digests, t.raw = append(t.digests, d.Digest), append(t.raw, b)
	}
	for _, v := range append(slices.Collect(maps.Values(byType)), all) {
		v.first = v.page("", c.opts.PageSize, c.opts.PageBytes)
	}
	return &cached{descs: descs, all: all, byType: byType}, nil
}

// page renders the referrers after the digest after: at most limit of
// them, in at most maxBytes of body unless a single one is larger.
func (v *view) page(after digest.Digest, limit, maxBytes int) Page {
	start := sort.Search(len(v.digests), func(i int) bool { return v.digests[i] > after })
	size, end := len(indexHead)+len(indexTail), start
	for end < len(v.raw) && end-start < limit {
		n := len(v.raw[end])
		if end > start {
			n++ // the comma
			if size+n > maxBytes {
				break
			}
		}
		size += n
		end++
	}
	if end == start {
		return Page{Index: emptyIndex}
	}
	body := make([]byte, 0, size)
	body = append(body, indexHead...)
	for i := start; i < end; i++ {
		if i > start {
			body = append(body, ',')
		}
		body = append(body, v.raw[i]...)
	}
	body = append(body, indexTail...)
	p := Page{Index: Index{Body: body, Count: end - start}}
	if end < len(v.raw) {
		p.Next = v.digests[end-1]
	}
	return p
}
