package controller

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/go-logr/logr"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/controller/policy"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/registry/names"
)

// Reasons an artifact is deleted, the "reason" label of
// hermes_controller_gc_artifacts_deleted_total.
const (
	gcUnused     = "unused"     // no Pod used it for longer than the retention of the policies matching it
	gcUnmatched  = "unmatched"  // no policy matches it any more, and its last retention ran out
	gcSuperseded = "superseded" // a newer index of the same manifest and platform replaced it
)

// collector is artifact garbage collection. The cache holds a usage
// record per image manifest with artifacts (artifacts.Usage, in
// hermes/usage): whether Pods use it and since when not. Each pass, run by
// the leader only, brings the records up to date with what Pods use now,
// and deletes, through the OCI API, the indexes of manifests unused for
// longer than their retention, and superseded indexes. The records are the
// state: a new leader continues from them; a record that says "in use"
// whose Pods have gone counts as unused from the moment a leader first
// sees it so, which errs on keeping. The blobs the indexes pointed to are
// the registry's to collect (it keeps what is still referenced, such as
// the zTOC catalog's).
type collector struct {
	cache    artifacts.Cache
	t        *tracker
	ps       *policies
	requeue  func(Key)
	interval time.Duration
	now      func() time.Time
	metrics  *metrics

	mu     sync.Mutex                    // one record writer at a time; guards known
	known  map[subject][]artifacts.Usage // the records as last listed and written since
	passes int
}

// NeedLeaderElection: only the leader deletes.
func (c *collector) NeedLeaderElection() bool { return true }

// Start runs a pass every interval until ctx ends. The first pass only
// writes records: it deletes nothing until the Pods have been seen once.
func (c *collector) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("gc")
	ctx = logr.NewContext(ctx, log)
	log.Info("artifact garbage collection started", "interval", c.interval)
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		start := time.Now()
		err := c.pass(ctx)
		c.metrics.gcDuration.Observe(time.Since(start).Seconds())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.metrics.gcRuns.WithLabelValues("error").Inc()
			log.Error(err, "artifact garbage collection; trying again next interval")
			continue
		}
		c.metrics.gcRuns.WithLabelValues("ok").Inc()
	}
}

// ensure makes sure build k's manifest has a record saying it is in use
// before anything of it is pushed, so that every index in the cache has a
// record, whoever leads next.
func (c *collector) ensure(ctx context.Context, k Key) error {
	u := c.t.useOf(k)
	if u == nil {
		return nil // nobody wants it: the build does not start
	}
	pols, catalog, err := c.inputs(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	known := c.known
	c.mu.Unlock()
	if known == nil {
		if known, err = c.records(ctx, catalog); err != nil {
			return err
		}
		c.mu.Lock()
		if c.known == nil {
			c.known = known
		}
		c.mu.Unlock()
	}
	s := subject{k.Repository, k.Manifest}
	c.mu.Lock()
	recs := slices.Clone(c.known[s])
	c.mu.Unlock()
	_, err = c.markUsed(ctx, catalog, s, u, recs, pols)
	return err
}

// inputs are the policies now and a client for the usage catalog.
func (c *collector) inputs(ctx context.Context) ([]*policy.Policy, *remote.Repository, error) {
	pols, err := c.ps.list(ctx)
	if err != nil {
		return nil, nil, err
	}
	catalog, err := c.cache.Catalog(artifacts.UsageCatalog)
	return pols, catalog, err
}

// records lists the usage records by manifest.
func (c *collector) records(ctx context.Context, catalog artifacts.Referrers) (map[subject][]artifacts.Usage, error) {
	list, bad, err := artifacts.Usages(ctx, catalog)
	if err != nil {
		return nil, err
	}
	out := map[subject][]artifacts.Usage{}
	for _, u := range list {
		s := subject{u.Repository, u.Manifest}
		out[s] = append(out[s], u)
	}
	if len(bad) > 0 {
		logr.FromContextOrDiscard(ctx).Info("unreadable usage records in the cache", "count", len(bad))
	}
	return out, nil
}

// merge folds the records of one manifest (several after a write that
// was cut short) into one: in use if any says so, last used at the latest.
func merge(recs []artifacts.Usage) (artifacts.Usage, bool) {
	if len(recs) == 0 {
		return artifacts.Usage{}, false
	}
	m := recs[0]
	for _, r := range recs[1:] {
		m.InUse = m.InUse || r.InUse
		if r.LastUsed.After(m.LastUsed) {
			m.LastUsed = r.LastUsed
		}
		m.Retention = max(m.Retention, r.Retention)
		m.Images = union(m.Images, r.Images)
	}
	return m, true
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// markUsed writes a record saying Pods use s, unless the one there says
// so already with the same retention and references. It returns the
// retention.
func (c *collector) markUsed(ctx context.Context, catalog artifacts.UsageStore, s subject, u *use, recs []artifacts.Usage, pols []*policy.Policy) (time.Duration, error) {
	ret := time.Duration(0)
	for _, p := range pols {
		if slices.Contains(u.policies, p.Name) {
			ret = max(ret, p.Retention)
		}
	}
	if ret == 0 {
		ret = policy.DefaultRetention
	}
	m, ok := merge(recs)
	images := union(m.Images, u.images)
	known := len(images) == len(m.Images) || len(m.Images) >= artifacts.MaxUsageImages // a full list stays as it is
	if ok && len(recs) == 1 && m.InUse && m.Retention == ret && known {
		return ret, nil
	}
	next := artifacts.Usage{Repository: s.repository, Manifest: s.manifest, Images: images, InUse: true, LastUsed: c.now(), Retention: ret}
	return ret, c.put(ctx, catalog, next, recs)
}

// put pushes a record and then deletes the ones it replaces.
func (c *collector) put(ctx context.Context, catalog artifacts.UsageStore, u artifacts.Usage, old []artifacts.Usage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, err := artifacts.PutUsage(ctx, catalog, u)
	if err != nil {
		return err
	}
	c.metrics.gcRecordWrites.Inc()
	s := subject{u.Repository, u.Manifest}
	if c.known != nil {
		c.known[s] = append(c.known[s], u)
	}
	for _, o := range old {
		if o.Record.Digest != u.Record.Digest {
			if err := artifacts.DeleteManifest(ctx, catalog.Manifests(), o.Record); err != nil {
				return fmt.Errorf("old usage record of %s: %w", s, err)
			}
			if c.known != nil {
				c.known[s] = slices.DeleteFunc(c.known[s], func(k artifacts.Usage) bool { return k.Record.Digest == o.Record.Digest })
			}
		}
	}
	return nil
}

// forget drops s's records from known once they are deleted.
func (c *collector) forget(s subject) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.known, s)
}

// pass is one round of garbage collection.
func (c *collector) pass(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	c.passes++
	deleting := c.passes > 1
	pols, catalog, err := c.inputs(ctx)
	if err != nil {
		return err
	}
	recs, err := c.records(ctx, catalog)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.known = map[subject][]artifacts.Usage{}
	for s, rs := range recs {
		c.known[s] = slices.Clone(rs)
	}
	c.mu.Unlock()
	used, unresolved := c.t.usage()
	c.metrics.gcRecords.Set(float64(len(recs)))
	var errs []error
	for s, u := range used {
		if _, err := c.markUsed(ctx, catalog, s, u, recs[s], pols); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.supersede(ctx, s, u.keep, deleting); err != nil {
			errs = append(errs, err)
		}
	}
	now := c.now()
	for s, rs := range recs {
		if used[s] != nil {
			continue
		}
		m, _ := merge(rs)
		if m.InUse || len(rs) > 1 {
			if m.InUse {
				// Its Pods went while nobody, or another leader, was
				// looking: count from now, which errs on keeping.
				m.LastUsed = now
				log.Info("no Pod uses the image any more; its artifacts are kept for the retention", "image", s, "retention", m.Retention)
			}
			m.InUse = false
			if err := c.put(ctx, catalog, m, rs); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if !deleting || unresolved[s.repository] {
			continue
		}
		ret, by := m.Retention, matching(pols, m.Images)
		if slices.ContainsFunc(by, func(p *policy.Policy) bool { return p.Paused }) {
			continue // a paused policy keeps its indexes, however long unused
		}
		reason := gcUnmatched
		if len(by) > 0 {
			reason, ret = gcUnused, 0
			for _, p := range by {
				ret = max(ret, p.Retention)
			}
		}
		idle := now.Sub(m.LastUsed)
		if idle < ret {
			if err := c.supersede(ctx, s, nil, true); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if c.t.inUse(s) {
			continue // a Pod came since the pass began
		}
		why := fmt.Sprintf("no Pod used it for %s, longer than the retention %s of policies %v", idle.Round(time.Second), ret, policyNames(by))
		if reason == gcUnmatched {
			why = fmt.Sprintf("no policy matches it any more and no Pod used it for %s, longer than its last retention %s", idle.Round(time.Second), ret)
		}
		if err := c.deleteAll(ctx, s, reason, why); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range rs {
			if err := artifacts.DeleteManifest(ctx, catalog.Manifests(), r.Record); err != nil {
				errs = append(errs, fmt.Errorf("usage record of %s: %w", s, err))
			}
		}
		c.forget(s)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d errors, the first: %w", len(errs), errs[0])
	}
	return nil
}

// matching returns the policies that select any of images.
func matching(pols []*policy.Policy, images []string) []*policy.Policy {
	var out []*policy.Policy
	for _, p := range pols {
		for _, img := range images {
			if p.MatchesImage(familiar(img), img) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// familiar is a normalized reference as a Pod may have written it
// (nginx:1.27), for selectors written against that form.
func familiar(img string) string {
	named, err := names.ParseReference(img)
	if err != nil {
		return img
	}
	return reference.FamiliarString(named)
}

func policyNames(ps []*policy.Policy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}

// deleteAll deletes every SOCI index of s.
func (c *collector) deleteAll(ctx context.Context, s subject, reason, why string) error {
	repo, err := c.cache.Repository(s.repository)
	if err != nil {
		return err
	}
	descs, err := artifacts.Indexes(ctx, repo, s.manifest)
	if err != nil {
		return err
	}
	for _, d := range descs {
		if err := c.delete(ctx, repo.Manifests(), s, d, reason, why); err != nil {
			return err
		}
	}
	if len(descs) == 0 {
		logr.FromContextOrDiscard(ctx).V(1).Info("usage record removed; the image had no index", "image", s, "why", why)
	}
	return nil
}

// supersede deletes the indexes of s that newer ones replace (see
// artifacts.Superseded); keep holds the platform and settings of the
// builds Pods want now.
func (c *collector) supersede(ctx context.Context, s subject, keep map[string]bool, deleting bool) error {
	if !deleting {
		return nil
	}
	repo, err := c.cache.Repository(s.repository)
	if err != nil {
		return err
	}
	descs, err := artifacts.Indexes(ctx, repo, s.manifest)
	if err != nil || len(descs) < 2 {
		return err
	}
	old := artifacts.Superseded(descs, func(d ocispec.Descriptor) bool {
		return keep[keepKey(d.Annotations[artifacts.AnnotationPlatform], d.Annotations[artifacts.AnnotationSettings])]
	})
	for _, d := range old {
		why := fmt.Sprintf("superseded: a newer index of the same manifest and platform %s exists, or one with the settings policies want now", d.Annotations[artifacts.AnnotationPlatform])
		if err := c.delete(ctx, repo.Manifests(), s, d, gcSuperseded, why); err != nil {
			return err
		}
	}
	return nil
}

func (c *collector) delete(ctx context.Context, manifests interface {
	Delete(context.Context, ocispec.Descriptor) error
}, s subject, d ocispec.Descriptor, reason, why string) error {
	if err := artifacts.DeleteManifest(ctx, manifests, d); err != nil {
		return fmt.Errorf("index %s of %s: %w", d.Digest, s, err)
	}
	c.metrics.gcDeleted.WithLabelValues(reason).Inc()
	logr.FromContextOrDiscard(ctx).Info("artifact deleted", "image", s, "index", d.Digest, "reason", reason, "why", why,
		"settings", d.Annotations[artifacts.AnnotationSettings], "created", d.Annotations[artifacts.AnnotationCreated])
	for _, k := range c.t.indexGone(s, d.Digest) {
		c.requeue(k)
	}
	return nil
}
