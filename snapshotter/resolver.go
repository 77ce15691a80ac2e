package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/hermes-oci/hermes/registry/artifacts"
)

// ErrNoIndex is returned by a Source that answered and holds no SOCI index
// for the image. Any other error means the source could not answer. It is
// artifacts.ErrNoIndex: one sentinel for every lookup.
var ErrNoIndex = artifacts.ErrNoIndex

// Image identifies what a Prepare belongs to.
type Image struct {
	// Ref is the image reference as the puller wrote it
	// (containerd.io/snapshot/cri.image-ref).
	Ref string
	// Manifest is the digest of the platform image manifest
	// (containerd.io/snapshot/cri.manifest-digest).
	Manifest digest.Digest
}

func (i Image) String() string { return i.Ref + "@" + i.Manifest.String() }

// Index is a SOCI index copied into the local store.
type Index struct {
	Digest digest.Digest
	// Layers are the image layers the index has a zTOC for; the others
	// (smaller than the builder's minimum, say) are unpacked as usual.
	Layers map[digest.Digest]bool
}

// Source is a place a SOCI index may live.
type Source interface {
	// Name says which source this is in logs and metrics ("cache", "upstream").
	Name() string
	// Fetch finds the SOCI index of img and copies it and its zTOCs into
	// the local content store soci reads. It returns an error wrapping
	// ErrNoIndex when the source has none.
	Fetch(ctx context.Context, img Image) (Index, error)
}

// Outcome is how a resolution ended; the values label metrics.
type Outcome string

const (
	// OutcomeCacheHit: the Hermes cache registry had the index.
	OutcomeCacheHit Outcome = "cache_hit"
	// OutcomeUpstream: the index was found next to the image at its registry.
	OutcomeUpstream Outcome = "upstream"
	// OutcomeNone: every source answered and none has an index.
	OutcomeNone Outcome = "none"
	// OutcomeError: no index, and at least one source could not answer.
	OutcomeError Outcome = "error"
)

// Resolution is the answer for one image manifest.
type Resolution struct {
	// Index is the SOCI index, already in the local store; zero when there
	// is none and containerd should pull normally.
	Index   Index
	Outcome Outcome
	// Source names the source that had the index.
	Source string
	// Reason says, for each source asked, why it gave no index.
	Reason string
	// Took is how long the lookup took (zero for an answer from memory).
	Took time.Duration
}

// Lazy reports whether the image has an index, so that layers with a zTOC
// can be mounted lazily.
func (r Resolution) Lazy() bool { return r.Index.Digest != "" }

// Observer is told about every lookup a Resolver makes (metrics).
type Observer interface {
	// Resolved is called once per lookup, not per Prepare.
	Resolved(res Resolution)
	// SourceDone is called once per source asked.
	SourceDone(source string, err error, took time.Duration)
}

// ResolverOptions configures NewResolver.
type ResolverOptions struct {
	// NegativeTTL is how long a "no index" or failed lookup is remembered;
	// default 30s. Positive answers are kept until evicted.
	NegativeTTL time.Duration
	// MaxEntries bounds the remembered answers; default 4096.
	MaxEntries int
	// Observer, if set, sees every lookup.
	Observer Observer
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Resolver asks its sources in order for an image's SOCI index and remembers
// the answer per manifest digest.
type Resolver struct {
	sources []Source
	opts    ResolverOptions

	flight singleflight.Group

	mu      sync.Mutex
	entries map[digest.Digest]*entry
	order   []digest.Digest // insertion order, for eviction
}

type entry struct {
	res     Resolution
	expires time.Time // zero: never
}

// NewResolver returns a Resolver that asks sources in the given order.
func NewResolver(opts ResolverOptions, sources ...Source) *Resolver {
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = 30 * time.Second
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 4096
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Resolver{sources: sources, opts: opts, entries: map[digest.Digest]*entry{}}
}

// Resolve returns the SOCI index for img, asking the sources only if no
// answer for img.Manifest is remembered. Concurrent calls for one manifest
// share a single lookup. The lookup does not stop when ctx is cancelled: the
// other callers waiting for it still want the answer.
func (r *Resolver) Resolve(ctx context.Context, img Image) Resolution {
	if res, ok := r.cached(img.Manifest); ok {
		return res
	}
	v, _, _ := r.flight.Do(img.Manifest.String(), func() (any, error) {
		// A caller that waited for the previous flight of this digest may
		// start a new one right after it stored its answer.
		if res, ok := r.cached(img.Manifest); ok {
			return res, nil
		}
		res := r.lookup(context.WithoutCancel(ctx), img)
		r.store(img.Manifest, res)
		return res, nil
	})
	return v.(Resolution)
}

// Forget drops what is remembered about manifest, so the next Resolve asks
// the sources again.
func (r *Resolver) Forget(manifest digest.Digest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.entries, manifest)
}

// ForgetIndexes drops every remembered answer whose index is in gone (the
// index was removed from the local store), so the next Resolve of those
// images copies it again.
func (r *Resolver) ForgetIndexes(gone map[digest.Digest]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for m, e := range r.entries {
		if e.res.Lazy() && gone[e.res.Index.Digest] {
			delete(r.entries, m)
		}
	}
}

func (r *Resolver) lookup(ctx context.Context, img Image) Resolution {
	log := logr.FromContextOrDiscard(ctx).WithValues("image", img.Ref, "manifest", img.Manifest)
	start := r.opts.Now()
	var reasons []string
	failed := false
	for _, src := range r.sources {
		t0 := r.opts.Now()
		idx, err := src.Fetch(ctx, img)
		took := r.opts.Now().Sub(t0)
		if r.opts.Observer != nil {
			r.opts.Observer.SourceDone(src.Name(), err, took)
		}
		if err == nil {
			outcome := OutcomeUpstream
			if src.Name() == SourceCache {
				outcome = OutcomeCacheHit
			}
			res := Resolution{Index: idx, Outcome: outcome, Source: src.Name(), Reason: strings.Join(reasons, "; "), Took: r.opts.Now().Sub(start)}
			log.Info("SOCI index resolved: lazy pull", "source", src.Name(), "index", idx.Digest, "zTOCs", len(idx.Layers), "took", res.Took, "skipped", res.Reason)
			r.observe(res)
			return res
		}
		if !errors.Is(err, ErrNoIndex) {
			failed = true
		}
		reasons = append(reasons, fmt.Sprintf("%s: %v", src.Name(), err))
	}
	if len(r.sources) == 0 {
		reasons = append(reasons, "no index sources configured")
	}
	res := Resolution{Outcome: OutcomeNone, Reason: strings.Join(reasons, "; "), Took: r.opts.Now().Sub(start)}
	if failed {
		res.Outcome = OutcomeError
	}
	log.Info("no SOCI index: containerd pulls the image normally", "outcome", res.Outcome, "why", res.Reason, "took", res.Took, "retryAfter", r.opts.NegativeTTL)
	r.observe(res)
	return res
}

func (r *Resolver) observe(res Resolution) {
	if r.opts.Observer != nil {
		r.opts.Observer.Resolved(res)
	}
}

func (r *Resolver) cached(d digest.Digest) (Resolution, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[d]
	if !ok {
		return Resolution{}, false
	}
	if !e.expires.IsZero() && !r.opts.Now().Before(e.expires) {
		delete(r.entries, d)
		return Resolution{}, false
	}
	res := e.res
	res.Took = 0
	return res, true
}

func (r *Resolver) store(d digest.Digest, res Resolution) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := &entry{res: res}
	if !res.Lazy() {
		e.expires = r.opts.Now().Add(r.opts.NegativeTTL)
	}
	if _, ok := r.entries[d]; !ok {
		r.order = append(r.order, d)
	}
	r.entries[d] = e
	// Evict the oldest answers; order may hold digests already forgotten or
	// expired, which are skipped.
	for len(r.entries) > r.opts.MaxEntries && len(r.order) > 0 {
		old := r.order[0]
		r.order = r.order[1:]
		if old == d {
			r.order = append(r.order, d)
			continue
		}
		delete(r.entries, old)
	}
	if len(r.order) > 2*r.opts.MaxEntries {
		kept := r.order[:0]
		for _, o := range r.order {
			if _, ok := r.entries[o]; ok {
				kept = append(kept, o)
			}
		}
		r.order = kept
	}
}
