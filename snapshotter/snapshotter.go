package snapshotter

import (
	"context"
	"sync"
	"time"

	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	ctdsnapshotters "github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/go-logr/logr"
	"github.com/opencontainers/go-digest"
)

// Snapshotter is the snapshotter containerd talks to: soci's, with the SOCI
// index of every image decided here before soci sees a Prepare.
type Snapshotter struct {
	snapshots.Snapshotter // soci's snapshotter
	resolver              *Resolver
	prepared              PrepareObserver

	// gate keeps the node-disk janitor (Exclusive) apart from the calls
	// that create, hand out or remove mounts.
	gate     sync.RWMutex
	onRemove func()
}

var (
	_ snapshots.Snapshotter = (*Snapshotter)(nil)
	_ snapshots.Cleaner     = (*Snapshotter)(nil)
)

// How an unpack Prepare was handed to soci, for PrepareObserver.
const (
	// PrepareLazy: the layer has a zTOC and is mounted over FUSE.
	PrepareLazy = "lazy"
	// PrepareSociUnpack: the image is indexed but this layer has no zTOC
	// (below the builder's minimum size); soci downloads and unpacks it.
	PrepareSociUnpack = "soci_unpack"
	// PrepareLocal: no index; containerd downloads and unpacks the layer.
	PrepareLocal = "local"
)

// PrepareObserver is told how each unpack Prepare was handed to soci.
type PrepareObserver interface {
	Prepared(mode string)
}

// New wraps soci's snapshotter. obs may be nil.
func New(soci snapshots.Snapshotter, r *Resolver, obs PrepareObserver) *Snapshotter {
	return &Snapshotter{Snapshotter: soci, resolver: r, prepared: obs}
}

// Prepare decides, for the Prepares containerd makes while unpacking an
// image (those carrying containerd.io/snapshot.ref), whether soci mounts the
// layer lazily: with the image's SOCI index in the local store it adds the
// index digest label; otherwise it removes containerd.io/snapshot.ref, so
// soci prepares an ordinary snapshot and containerd unpacks the layer.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	labels := info.Labels
	if _, unpack := labels[snapshots.LabelSnapshotRef]; !unpack {
		// A container's writable layer, or a client's own snapshot.
		return s.Snapshotter.Prepare(ctx, key, parent, opts...)
	}
	if labels[source.TargetSociIndexDigestLabel] != "" {
		// The puller chose the index itself; soci reads it as usual.
		return s.Snapshotter.Prepare(ctx, key, parent, opts...)
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("key", key, "layer", labels[ctdsnapshotters.TargetLayerDigestLabel])
	ref, manifest := labels[ctdsnapshotters.TargetRefLabel], labels[ctdsnapshotters.TargetManifestDigestLabel]
	d, err := digest.Parse(manifest)
	if ref == "" || err != nil {
		// Transfer-service pulls carry no image labels unless containerd's
		// proxy_plugins entry sets enable_remote_snapshot_annotations.
		log.V(1).Info("no image labels on Prepare: local unpack", "why", "missing "+ctdsnapshotters.TargetRefLabel+" or "+ctdsnapshotters.TargetManifestDigestLabel+" (set enable_remote_snapshot_annotations on the proxy plugin)")
		return s.local(ctx, key, parent, opts)
	}
	res := s.resolver.Resolve(ctx, Image{Ref: ref, Manifest: d})
	if !res.Lazy() {
		log.V(1).Info("no SOCI index: local unpack", "image", ref, "why", res.Reason)
		return s.local(ctx, key, parent, opts)
	}
	// Every layer of an indexed image goes to soci, also those without a
	// zTOC (below the builder's minimum size): soci downloads and unpacks
	// those itself. Handing one back to containerd would make containerd's
	// unpacker start whole downloads of all the layers above it, which
	// compete with the lazy reads until the pull ends.
	add := map[string]string{source.TargetSociIndexDigestLabel: res.Index.Digest.String()}
	mode := PrepareLazy
	if layer, err := digest.Parse(labels[ctdsnapshotters.TargetLayerDigestLabel]); err == nil && !res.Index.Layers[layer] {
		mode = PrepareSociUnpack
		// soci would try a FUSE mount first and log its failure ("no ztoc
		// for layer") as a warning. A size below soci's min_layer_size
		// (daemon sets at least 1) makes it skip the attempt and unpack
		// the layer at once; soci reads no other use of this label.
		add[source.TargetSizeLabel] = "0"
		log.Info("layer has no zTOC (smaller than the index's minimum layer size): soci downloads and unpacks it whole, as expected", "image", ref)
	}
	if s.prepared != nil {
		s.prepared.Prepared(mode)
	}
	return s.Snapshotter.Prepare(ctx, key, parent, append(opts, snapshots.WithLabels(add))...)
}

// local hands soci a Prepare without containerd.io/snapshot.ref: soci then
// returns plain overlay mounts without looking for an index (and so without
// remembering a failure for the image), and containerd unpacks the layer.
func (s *Snapshotter) local(ctx context.Context, key, parent string, opts []snapshots.Opt) ([]mount.Mount, error) {
	if s.prepared != nil {
		s.prepared.Prepared(PrepareLocal)
	}
	return s.Snapshotter.Prepare(ctx, key, parent, append(opts, func(info *snapshots.Info) error {
		delete(info.Labels, snapshots.LabelSnapshotRef)
		return nil
	})...)
}

// View implements snapshots.Snapshotter.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	return s.Snapshotter.View(ctx, key, parent, opts...)
}

// Mounts implements snapshots.Snapshotter.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	return s.Snapshotter.Mounts(ctx, key)
}

// Remove implements snapshots.Snapshotter, and tells the OnRemove hook.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	s.gate.RLock()
	err := s.Snapshotter.Remove(ctx, key)
	s.gate.RUnlock()
	if err == nil && s.onRemove != nil {
		s.onRemove()
	}
	return err
}

// OnRemove sets f to be called after every snapshot removed (the node-disk
// janitor's Kick). Set it before serving.
func (s *Snapshotter) OnRemove(f func()) { s.onRemove = f }

// Exclusive runs f while no Prepare, View, Mounts or Remove is in flight,
// and holds new ones until f returns: what f removes cannot be needed by a
// call under way. It waits for a moment with no call in flight without
// holding up new calls meanwhile (a Prepare that unpacks a layer can take
// minutes, and container starts must not queue behind the janitor).
func (s *Snapshotter) Exclusive(f func()) {
	for !s.gate.TryLock() {
		time.Sleep(20 * time.Millisecond)
	}
	defer s.gate.Unlock()
	f()
}

// Cleanup forwards to soci's Cleanup. Embedding alone would hide it from
// containerd's snapshot service, which looks for snapshots.Cleaner, and
// removed snapshots would stay on disk.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	if c, ok := s.Snapshotter.(snapshots.Cleaner); ok {
		return c.Cleanup(ctx)
	}
	return nil
}
