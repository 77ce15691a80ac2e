package referrers

import (
	"context"
	"encoding/json"
	"fmt"
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
}

// Index is a rendered Referrers API answer.
type Index struct {
	Body  []byte // an application/vnd.oci.image.index.v1+json document
	Count int    // descriptors in Body
}

// Cache is a Store that answers List and Lookup from memory, keeping sets
// read from the underlying Store until a write through it changes them.
type Cache struct {
	store Store
	opts  CacheOptions
	group singleflight.Group

	mu      sync.Mutex
	writes  uint64 // bumped by every write; a read started before a write is not cached
	entries map[string]*cached
}

type cached struct {
	descs   []ocispec.Descriptor
	all     Index
	byType  map[string]Index
	expires time.Time // zero: never
}

var _ Store = (*Cache)(nil)

// NewCache returns a Cache over store.
func NewCache(store Store, opts CacheOptions) *Cache {
	if opts.Size <= 0 {
		opts.Size = 1 << 16
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

// Lookup returns the Referrers API answer for subject in repo, only
// referrers of artifactType when it is not empty, and whether it came from
// memory.
func (c *Cache) Lookup(ctx context.Context, repo string, subject digest.Digest, artifactType string) (Index, bool, error) {
	e, hit, err := c.get(ctx, repo, subject)
	if err != nil {
		return Index{}, hit, err
	}
	if artifactType == "" {
		return e.all, hit, nil
	}
	if ix, ok := e.byType[artifactType]; ok {
		return ix, hit, nil
	}
	return emptyIndex, hit, nil
}

func (c *Cache) get(ctx context.Context, repo string, subject digest.Digest) (*cached, bool, error) {
	if err := check(repo, subject); err != nil {
		return nil, false, err
	}
	key := cacheKey(repo, subject)
	now := time.Now()
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && (e.expires.IsZero() || now.Before(e.expires)) {
		return e, true, nil
	}
	// Callers share one read; one caller's cancellation must not fail the others.
	ctx = context.WithoutCancel(ctx)
	v, err, _ := c.group.Do(key, func() (any, error) {
		c.mu.Lock()
		writes := c.writes
		c.mu.Unlock()
		descs, err := c.store.List(ctx, repo, subject)
		if err == nil && c.opts.Filter != nil {
			descs, err = c.opts.Filter(ctx, repo, descs)
		}
		if err != nil {
			return nil, err
		}
		e, err := render(descs)
		if err != nil {
			return nil, err
		}
		if c.opts.TTL > 0 {
			e.expires = time.Now().Add(c.opts.TTL)
		}
		c.mu.Lock()
		if c.writes == writes {
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

// emptyIndex is what marshalIndex(nil) returns, written out.
var emptyIndex = Index{Body: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)}

// render precomputes the answer for every artifactType present, so a
// lookup never encodes JSON.
func render(descs []ocispec.Descriptor) (*cached, error) {
	e := &cached{descs: descs, byType: map[string]Index{}}
	var err error
	if e.all, err = marshalIndex(descs); err != nil {
		return nil, err
	}
	groups := map[string][]ocispec.Descriptor{}
	for _, d := range descs {
		groups[d.ArtifactType] = append(groups[d.ArtifactType], d)
	}
	for t, ds := range groups {
		if e.byType[t], err = marshalIndex(ds); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func marshalIndex(descs []ocispec.Descriptor) (Index, error) {
	if descs == nil {
		descs = []ocispec.Descriptor{}
	}
	ix := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
	ix.SchemaVersion = 2
	b, err := json.Marshal(ix)
	if err != nil {
		return Index{}, fmt.Errorf("encode referrers index: %w", err)
	}
	return Index{Body: b, Count: len(descs)}, nil
}
