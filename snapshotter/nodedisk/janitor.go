package nodedisk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/go-logr/logr"
	"github.com/opencontainers/go-digest"
)

// Walker lists snapshots: soci's snapshotter.
type Walker interface {
	Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error
}

// Options configures New.
type Options struct {
	Layout Layout
	// Snapshots is soci's snapshotter (not the gated one: the janitor walks
	// it from inside the gate).
	Snapshots Walker
	// Gate runs f while no Prepare, View, Mounts or Remove is in flight.
	Gate func(f func())
	// ContentGC removes blobs of the local store that no snapshot's index
	// needs; only for soci's own store type.
	ContentGC bool
	// Forget is told the digests removed from the local store, so that
	// nothing remembers an index as local that no longer is (the resolver).
	Forget func(removed map[digest.Digest]bool)
	// Cleanup, if set, removes snapshot directories that no snapshot owns
	// (soci's snapshots.Cleaner: what a crash during a removal leaves).
	Cleanup func(ctx context.Context) error
	// Mounts are soci's lazy mounts; nil disables span eviction.
	Mounts *Mounts
	// SpanCacheMaxBytes caps the span cache; 0 is no cap.
	SpanCacheMaxBytes int64
	// Interval between passes that nothing asked for; default 1m.
	Interval time.Duration
	// Metrics, if set, count what the janitor does.
	Metrics *Metrics
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Janitor reclaims disk (see the package doc). Kick it after containerd
// removes snapshots; Run runs its passes.
type Janitor struct {
	o    Options
	kick chan struct{}

	mu       sync.Mutex
	lastUsed map[string]time.Time // committed snapshot name -> last seen in use
}

// New returns a janitor.
func New(o Options) *Janitor {
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Gate == nil {
		o.Gate = func(f func()) { f() }
	}
	return &Janitor{o: o, kick: make(chan struct{}, 1), lastUsed: map[string]time.Time{}}
}

// Kick asks for a pass soon; it never blocks.
func (j *Janitor) Kick() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// Run makes a pass after every Kick (at most one every second, so that the
// removals of one image are reclaimed together) and every Interval, until
// ctx ends.
func (j *Janitor) Run(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	t := time.NewTicker(j.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-j.kick:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
		if _, err := j.Pass(ctx); err != nil {
			log.Error(err, "reclaiming node disk")
		}
	}
}

// PassReport says what one pass did.
type PassReport struct {
	// Blobs removed from the local store and the bytes they took.
	Blobs     int
	BlobBytes int64
	// Evicted layers (remounted with an empty span cache) and the bytes of
	// spans that went with them.
	Evicted      int
	EvictedBytes int64
	// SpanBytes is the span cache's size after the pass.
	SpanBytes int64
	// SnapshotBytes is what Cleanup freed (or, negative, what snapshots
	// took on meanwhile).
	SnapshotBytes int64
}

// Pass reclaims what it can now.
func (j *Janitor) Pass(ctx context.Context) (PassReport, error) {
	var rep PassReport
	var err error
	j.o.Gate(func() { rep, err = j.pass(ctx) })
	return rep, err
}

func (j *Janitor) pass(ctx context.Context) (PassReport, error) {
	log := logr.FromContextOrDiscard(ctx)
	var rep PassReport
	if ctx.Err() != nil {
		return rep, nil // stopping: soci may be closed already
	}
	infos := map[string]snapshots.Info{}
	if err := j.o.Snapshots.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		infos[i.Name] = i
		return nil
	}); err != nil {
		return rep, fmt.Errorf("list snapshots: %w", err)
	}
	var errs []error
	if j.o.Cleanup != nil {
		before := j.o.Layout.Size(KindSnapshots)
		if err := j.o.Cleanup(ctx); err != nil {
			errs = append(errs, fmt.Errorf("remove orphaned snapshot directories: %w", err))
		}
		rep.SnapshotBytes = before - j.o.Layout.Size(KindSnapshots)
	}
	if j.o.ContentGC {
		if err := j.collectContent(ctx, infos, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	if j.o.Mounts != nil {
		if err := j.o.Mounts.Repair(ctx); err != nil {
			errs = append(errs, err)
		}
		j.evictSpans(ctx, infos, &rep)
	}
	if rep.Blobs > 0 || rep.Evicted > 0 || rep.SnapshotBytes > 0 {
		log.Info("node disk reclaimed", "blobs", rep.Blobs, "blobBytes", rep.BlobBytes, "orphanedSnapshotBytes", max(rep.SnapshotBytes, 0),
			"evictedLayers", rep.Evicted, "evictedSpanBytes", rep.EvictedBytes, "spanCacheBytes", rep.SpanBytes,
			"spanCacheMaxBytes", j.o.SpanCacheMaxBytes)
	}
	return rep, errors.Join(errs...)
}

// collectContent removes every blob of the local store that no snapshot's
// SOCI index needs: indexes of images containerd removed, their zTOCs, and
// the whole layer blobs soci stored to unpack layers without a zTOC.
func (j *Janitor) collectContent(ctx context.Context, infos map[string]snapshots.Info, rep *PassReport) error {
	keep := map[digest.Digest]bool{}
	for _, i := range infos {
		d, err := digest.Parse(i.Labels[source.TargetSociIndexDigestLabel])
		if err != nil || keep[d] {
			continue
		}
		keep[d] = true
		b, err := os.ReadFile(filepath.Join(j.o.Layout.Blobs(), d.Encoded()))
		if err != nil {
			continue // not local (the snapshot cannot be restored either)
		}
		var idx soci.Index
		if err := soci.UnmarshalIndex(b, &idx); err != nil {
			continue
		}
		keep[idx.Config.Digest] = true
		for _, bl := range idx.Blobs {
			keep[bl.Digest] = true
		}
	}
	ents, err := os.ReadDir(j.o.Layout.Blobs())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local store: %w", err)
	}
	removed := map[digest.Digest]bool{}
	for _, e := range ents {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if keep[d] {
			continue
		}
		p := filepath.Join(j.o.Layout.Blobs(), e.Name())
		size := diskUsage(p, map[uint64]bool{})
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove blob %s: %w", d, err)
		}
		removed[d] = true
		rep.Blobs++
		rep.BlobBytes += size
	}
	if len(removed) > 0 {
		if j.o.Forget != nil {
			j.o.Forget(removed)
		}
		if m := j.o.Metrics; m != nil {
			m.CollectedBlobs.Add(float64(len(removed)))
			m.CollectedBytes.Add(float64(rep.BlobBytes))
		}
	}
	return nil
}

// evictSpans remounts idle layers, least recently used first, until the
// span cache is within its cap.
func (j *Janitor) evictSpans(ctx context.Context, infos map[string]snapshots.Info, rep *PassReport) {
	log := logr.FromContextOrDiscard(ctx)
	now := j.o.Now()
	inUse := usedLayers(infos)
	layers := j.o.Mounts.Layers()

	j.mu.Lock()
	mounted := map[string]bool{}
	for _, l := range layers {
		mounted[l.Snapshot] = true
		if _, ok := j.lastUsed[l.Snapshot]; ok && !inUse[l.Snapshot] {
			continue
		}
		j.lastUsed[l.Snapshot] = now // in use now, or newly mounted
	}
	for name := range j.lastUsed {
		if !mounted[name] {
			delete(j.lastUsed, name)
		}
	}
	var idle []Layer
	for _, l := range layers {
		if !inUse[l.Snapshot] {
			idle = append(idle, l)
		}
	}
	sort.SliceStable(idle, func(a, b int) bool { return j.lastUsed[idle[a].Snapshot].Before(j.lastUsed[idle[b].Snapshot]) })
	j.mu.Unlock()

	size := j.o.Layout.Size(KindSpans)
	max := j.o.SpanCacheMaxBytes
	for _, l := range idle {
		if max <= 0 || size <= max {
			break
		}
		if err := j.o.Mounts.Remount(ctx, l.Mountpoint); err != nil {
			log.Error(err, "evicting the spans of an idle layer", "snapshot", l.Snapshot)
			continue
		}
		after := j.o.Layout.Size(KindSpans)
		if freed := size - after; freed > 0 {
			rep.Evicted++
			rep.EvictedBytes += freed
			if m := j.o.Metrics; m != nil {
				m.Evictions.Inc()
				m.EvictedBytes.Add(float64(freed))
			}
			log.V(1).Info("evicted the spans of an idle layer", "snapshot", l.Snapshot, "bytes", freed)
		}
		size = after
	}
	rep.SpanBytes = size
	if max > 0 && size > max {
		log.Info("span cache over its cap: the layers holding its spans are in use by containers; they are evicted once idle",
			"spanCacheBytes", size, "spanCacheMaxBytes", max, "setting", "[hermes] span_cache_max_bytes")
	}
}

// usedLayers returns the snapshots that an active snapshot or a view
// stands on: the layers of running (or created) containers' rootfs, and of
// unpacks under way.
func usedLayers(infos map[string]snapshots.Info) map[string]bool {
	used := map[string]bool{}
	for _, i := range infos {
		if i.Kind != snapshots.KindActive && i.Kind != snapshots.KindView {
			continue
		}
		for p := i.Parent; p != "" && !used[p]; p = infos[p].Parent {
			used[p] = true
		}
	}
	return used
}
