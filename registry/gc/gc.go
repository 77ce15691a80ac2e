package gc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/go-logr/logr"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/hermes-oci/hermes/registry/referrers"
)

// Defaults of Options, and of hermes-registry's --blob-gc-interval and
// --blob-gc-grace: a collection an hour, keeping whatever was written or used
// in the last hour, which is longer than any build between its first blob
// and its index.
const (
	DefaultInterval = time.Hour
	DefaultGrace    = time.Hour
)

// deleteWorkers is how many blob deletions run at once.
const deleteWorkers = 4

// ErrConfig is wrapped by errors about unusable Options.
var ErrConfig = errors.New("invalid garbage collection settings")

// Options configure a Collector.
type Options struct {
	// Interval between runs of Start; the first run starts one Interval
	// after Start. Zero means DefaultInterval.
	Interval time.Duration
	// Grace: anything written or used less than Grace before a run started
	// is kept. Zero means DefaultGrace.
	Grace time.Duration
	// InUse is where the registry reports the digests it serves and
	// receives; nil protects pushes by Grace alone.
	InUse *InUse
	// Referrers deletes stale referrer records; the registry passes its
	// referrers cache so its answers forget them too. nil deletes them in
	// the driver directly.
	Referrers referrers.Store
	// Metrics receives the collector's metrics; nil registers none.
	Metrics prometheus.Registerer
	// Workers is how many manifests are read at once (default 16: object
	// stores answer each read in milliseconds).
	Workers int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Report is what one run found and removed.
type Report struct {
	Repositories    int
	Manifests       int // stored manifests (revisions) seen
	LiveManifests   int
	Blobs           int // blobs seen
	LiveBlobs       int // content digests found live (some may not be stored here)
	DeletedBlobs    int
	DeletedBytes    int64
	DeletedManifest int
	DeletedLinks    int // repository links to blobs that are gone
	DeletedRecords  int // referrer records whose manifest is gone
	DeletedUploads  int
	Kept            int // candidates kept because a push used them during the run
	Duration        time.Duration
}

// Collector collects garbage in one storage driver. It is a
// controller-runtime Runnable that runs only on the leader.
type Collector struct {
	driver  storagedriver.StorageDriver
	opts    Options
	metrics *metrics
	mu      sync.Mutex // one run at a time
}

// New returns a Collector over d, the registry's storage driver.
func New(d storagedriver.StorageDriver, opts Options) (*Collector, error) {
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Interval < 0 || opts.Grace < 0 {
		return nil, fmt.Errorf("%w: interval %s and grace %s must be positive", ErrConfig, opts.Interval, opts.Grace)
	}
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Referrers == nil {
		opts.Referrers = referrers.NewDriver(d)
	}
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, fmt.Errorf("register garbage collection metrics: %w", err)
	}
	return &Collector{driver: d, opts: opts, metrics: m}, nil
}

// Grace is the collector's grace period.
func (c *Collector) Grace() time.Duration { return c.opts.Grace }

// NeedLeaderElection runs the collector on the leader only.
func (c *Collector) NeedLeaderElection() bool { return true }

// Start runs a collection every Interval until ctx ends. A failed run is
// logged and counted; the next one tries again.
func (c *Collector) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("gc")
	log.Info("garbage collection scheduled", "interval", c.opts.Interval, "grace", c.opts.Grace)
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := c.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error(err, "garbage collection failed")
		}
	}
}

// Run collects once and reports what it removed. Nothing is deleted when
// the mark phase fails.
func (c *Collector) Run(ctx context.Context) (rep Report, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	log := logr.FromContextOrDiscard(ctx).WithName("gc")
	start := c.opts.Now()
	cutoff := start.Add(-c.opts.Grace)
	defer func() {
		rep.Duration = time.Since(start)
		c.metrics.done(rep, err, c.opts.Now())
		if err == nil {
			log.Info("garbage collection done", "repositories", rep.Repositories, "manifests", rep.Manifests,
				"liveManifests", rep.LiveManifests, "blobs", rep.Blobs, "deletedBlobs", rep.DeletedBlobs,
				"deletedBytes", rep.DeletedBytes, "deletedManifests", rep.DeletedManifest, "deletedRecords", rep.DeletedRecords,
				"deletedLinks", rep.DeletedLinks, "deletedUploads", rep.DeletedUploads, "keptInUse", rep.Kept, "duration", rep.Duration)
		}
	}()

	repos, err := c.scan(ctx)
	if err != nil {
		return rep, err
	}
	rep.Repositories = len(repos)
	for _, r := range repos {
		rep.Manifests += len(r.revisions)
	}
	m, err := mark(ctx, repos, cutoff, c.readManifest, c.opts.Workers)
	if err != nil {
		return rep, fmt.Errorf("mark: %w", err)
	}
	for _, live := range m.manifests {
		rep.LiveManifests += len(live)
	}
	rep.LiveBlobs = len(m.blobs)
	for _, s := range m.missing {
		log.Info("live manifest has no content; left alone", "manifest", s)
	}
	if err := c.sweepManifests(ctx, log, repos, m, cutoff, &rep); err != nil {
		return rep, err
	}
	if err := c.sweepBlobs(ctx, log, repos, m, cutoff, &rep); err != nil {
		return rep, err
	}
	if err := c.sweepUploads(ctx, log, repos, cutoff, &rep); err != nil {
		return rep, err
	}
	c.opts.InUse.forget(cutoff)
	return rep, nil
}

// scan reads every repository's links and every referrer record.
func (c *Collector) scan(ctx context.Context) (map[string]*repoState, error) {
	repos := map[string]*repoState{}
	state := func(name string) *repoState {
		r := repos[name]
		if r == nil {
			r = newRepoState()
			repos[name] = r
		}
		return r
	}
	type pending struct {
		path string
		set  func(digest.Digest)
	}
	var reads []pending
	err := walk(ctx, c.driver, reposRoot, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		p, ok := parseRepoPath(fi.Path())
		if !ok {
			return nil
		}
		r := state(p.repo)
		mod := fi.ModTime()
		switch rest := p.rest; {
		case len(rest) == 5 && rest[0] == "_manifests" && rest[1] == "revisions" && rest[4] == "link":
			if d, ok := linkDigest(rest[2], rest[3]); ok {
				r.revisions[d] = link{target: d, mod: mod}
				if d.Algorithm() != digest.Canonical {
					reads = append(reads, pending{fi.Path(), func(t digest.Digest) { r.revisions[d] = link{target: t, mod: mod} }})
				}
			}
		case len(rest) == 5 && rest[0] == "_manifests" && rest[1] == "tags" && rest[3] == "current" && rest[4] == "link":
			tag := rest[2]
			reads = append(reads, pending{fi.Path(), func(t digest.Digest) { r.tags[tag] = t }})
		case len(rest) == 7 && rest[0] == "_manifests" && rest[1] == "tags" && rest[3] == "index" && rest[6] == "link":
			if d, ok := linkDigest(rest[4], rest[5]); ok {
				r.tagIndex[d] = append(r.tagIndex[d], rest[2])
			}
		case len(rest) == 4 && rest[0] == "_layers" && rest[3] == "link":
			if d, ok := linkDigest(rest[1], rest[2]); ok {
				r.layers[d] = link{target: d, mod: mod}
				if d.Algorithm() != digest.Canonical {
					reads = append(reads, pending{fi.Path(), func(t digest.Digest) { r.layers[d] = link{target: t, mod: mod} }})
				}
			}
		case len(rest) >= 3 && rest[0] == "_uploads":
			if id := rest[1]; mod.After(r.uploads[id]) {
				r.uploads[id] = mod
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan repositories: %w", err)
	}
	for _, p := range reads {
		b, err := c.driver.GetContent(ctx, p.path)
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("read link %s: %w", p.path, err)
		}
		d, err := digest.Parse(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("%w: link %s: %w", ErrUnreadable, p.path, err)
		}
		p.set(d)
	}
	err = walk(ctx, c.driver, referrers.Root, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		if e, ok := referrers.ParseEntryPath(fi.Path()); ok {
			r := state(e.Repository)
			r.referrers[e.Referrer] = append(r.referrers[e.Referrer], record{subject: e.Subject, mod: fi.ModTime()})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan referrer records: %w", err)
	}
	return repos, nil
}

func (c *Collector) readManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	b, err := c.driver.GetContent(ctx, blobDataPath(d))
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil, errMissing
	}
	return b, err
}

// deletePath removes a file or directory; gone already is fine.
func (c *Collector) deletePath(ctx context.Context, p string) error {
	err := c.driver.Delete(ctx, p)
	if err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
		return fmt.Errorf("delete %s: %w", p, err)
	}
	return nil
}

// sweepManifests removes the revisions that are neither live nor young,
// and referrer records older than the grace whose manifest is gone.
func (c *Collector) sweepManifests(ctx context.Context, log logr.Logger, repos map[string]*repoState, m *marks, cutoff time.Time, rep *Report) error {
	for name, r := range repos {
		live := m.manifests[name]
		for d, l := range r.revisions {
			if _, ok := live[l.target]; ok || !l.mod.Before(cutoff) {
				continue
			}
			deleted, err := c.opts.InUse.deleteUnused(l.target, cutoff, func() error {
				if err := c.deletePath(ctx, revisionDir(name, d)); err != nil {
					return err
				}
				for _, tag := range r.tagIndex[d] {
					if err := c.deletePath(ctx, tagIndexDir(name, tag, d)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("sweep manifest %s in %s: %w", d, name, err)
			}
			if !deleted {
				rep.Kept++
				continue
			}
			delete(r.revisions, d)
			rep.DeletedManifest++
			c.metrics.manifests.Inc()
			log.Info("deleted manifest", "repository", name, "digest", d, "written", l.mod,
				"reason", "untagged, not a referrer, and no live index or referrer in the repository names it")
		}
		for d, recs := range r.referrers {
			if _, ok := r.revisions[d]; ok {
				continue
			}
			for _, rec := range recs {
				if !rec.mod.Before(cutoff) {
					continue
				}
				if err := c.opts.Referrers.Delete(ctx, name, rec.subject, d); err != nil {
					return fmt.Errorf("sweep referrer record: %w", err)
				}
				rep.DeletedRecords++
				log.Info("deleted referrer record", "repository", name, "subject", rec.subject, "referrer", d,
					"reason", "its manifest is no longer in the repository")
			}
		}
	}
	return nil
}

// sweepBlobs removes blob data no live manifest names, unless it or a
// repository's link to it was written after cutoff or a push used it,
// together with the repositories' links to it. Links to blobs that are not
// stored at all go too.
func (c *Collector) sweepBlobs(ctx context.Context, log logr.Logger, repos map[string]*repoState, m *marks, cutoff time.Time, rep *Report) error {
	type blob struct {
		d    digest.Digest
		size int64
		mod  time.Time
	}
	var dead []blob
	stored := map[digest.Digest]struct{}{}
	err := walk(ctx, c.driver, blobsRoot, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		d, ok := parseBlobPath(fi.Path())
		if !ok {
			return nil
		}
		rep.Blobs++
		stored[d] = struct{}{}
		if _, live := m.blobs[d]; !live && fi.ModTime().Before(cutoff) {
			dead = append(dead, blob{d, fi.Size(), fi.ModTime()})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan blobs: %w", err)
	}
	// The repositories linking each blob, by content digest.
	type linkRef struct {
		repo string
		d    digest.Digest
		mod  time.Time
	}
	links := map[digest.Digest][]linkRef{}
	for name, r := range repos {
		for d, l := range r.layers {
			links[l.target] = append(links[l.target], linkRef{name, d, l.mod})
		}
	}
	// A few deletions at once: on object stores each is a round trip; more
	// compete with the reads the registry serves meanwhile (16 at once
	// tripled the p99 of Referrers lookups in tools/bench/gc on 2 cores).
	// Each digest's deletion is serialized with its uses (InUse).
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(deleteWorkers)
next:
	for _, b := range dead {
		for _, l := range links[b.d] {
			if !l.mod.Before(cutoff) {
				continue next // linked (uploaded again, mounted) lately
			}
		}
		g.Go(func() error {
			deleted, err := c.opts.InUse.deleteUnused(b.d, cutoff, func() error {
				if err := c.deletePath(gctx, blobDir(b.d)); err != nil {
					return err
				}
				for _, l := range links[b.d] {
					if err := c.deletePath(gctx, layerLinkDir(l.repo, l.d)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("sweep blob %s: %w", b.d, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !deleted {
				rep.Kept++
				return nil
			}
			rep.DeletedBlobs++
			rep.DeletedBytes += b.size
			rep.DeletedLinks += len(links[b.d])
			c.metrics.blobs.Inc()
			c.metrics.bytes.Add(float64(b.size))
			log.Info("deleted blob", "digest", b.d, "size", b.size, "written", b.mod,
				"reason", "no live manifest in any repository names it")
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Links to content that is not stored: left by distribution's offline
	// collector or a crash between the two deletions above.
	for target, ls := range links {
		if _, ok := stored[target]; ok {
			continue
		}
		if _, live := m.blobs[target]; live {
			continue // a mirrored image's layer, say: not ours to tidy
		}
		for _, l := range ls {
			if !l.mod.Before(cutoff) {
				continue
			}
			if _, err := c.opts.InUse.deleteUnused(target, cutoff, func() error { return c.deletePath(ctx, layerLinkDir(l.repo, l.d)) }); err != nil {
				return fmt.Errorf("sweep link %s in %s: %w", l.d, l.repo, err)
			}
			rep.DeletedLinks++
		}
	}
	return nil
}

// sweepUploads removes upload directories with no activity since cutoff.
func (c *Collector) sweepUploads(ctx context.Context, log logr.Logger, repos map[string]*repoState, cutoff time.Time, rep *Report) error {
	for name, r := range repos {
		for id, last := range r.uploads {
			if !last.Before(cutoff) {
				continue
			}
			if err := c.deletePath(ctx, uploadDir(name, id)); err != nil {
				return fmt.Errorf("sweep upload: %w", err)
			}
			rep.DeletedUploads++
			c.metrics.uploads.Inc()
			log.Info("deleted upload", "repository", name, "upload", id, "lastActivity", last,
				"reason", "unfinished and idle for longer than the grace period")
		}
	}
	return nil
}

// walk is the driver's Walk of root (one recursive listing on object
// stores), where a missing root is an empty tree. Some drivers' walks fail
// with "path not found" when a directory below root vanishes or is empty
// mid-walk (distribution's generic fallback, used by the in-memory
// driver); treating that as an empty tree would sweep everything it holds,
// so the tree is then walked again directory by directory, skipping only
// what is really gone.
func walk(ctx context.Context, d storagedriver.StorageDriver, root string, fn storagedriver.WalkFn) error {
	var seen []storagedriver.FileInfo
	err := d.Walk(ctx, root, func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() { // every caller looks at files only
			seen = append(seen, fi)
		}
		return nil
	})
	if err == nil {
		for _, fi := range seen {
			if err := fn(fi); err != nil {
				return err
			}
		}
		return nil
	}
	if !errors.As(err, new(storagedriver.PathNotFoundError)) {
		return err
	}
	if _, serr := d.Stat(ctx, root); errors.As(serr, new(storagedriver.PathNotFoundError)) {
		return nil
	} else if serr != nil {
		return serr
	}
	if _, err := d.List(ctx, root); err != nil {
		// distribution's in-memory driver cannot list some directories
		// it has (names repeating a component above them): an empty
		// answer would read as "nothing is referenced".
		return fmt.Errorf("storage driver %s cannot list %s, which exists: %w", d.Name(), root, err)
	}
	return walkDirs(ctx, d, root, fn)
}

func walkDirs(ctx context.Context, d storagedriver.StorageDriver, dir string, fn storagedriver.WalkFn) error {
	children, err := d.List(ctx, dir)
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, c := range children {
		fi, err := d.Stat(ctx, c)
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(fi); err != nil {
			return err
		}
		if fi.IsDir() {
			if err := walkDirs(ctx, d, c, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
