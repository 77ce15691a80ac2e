package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/awslabs/soci-snapshotter/config"
	socifs "github.com/awslabs/soci-snapshotter/fs"
	"github.com/awslabs/soci-snapshotter/fs/layer"
	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/awslabs/soci-snapshotter/metadata"
	snbase "github.com/awslabs/soci-snapshotter/snapshot"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay/overlayutils"
	"github.com/go-logr/logr"
	bolt "go.etcd.io/bbolt"

	"github.com/hermes-oci/hermes/snapshotter/memmeta"
	"github.com/hermes-oci/hermes/snapshotter/nodedisk"
)

// sociSnapshotter is soci's snapshotter with what it owns besides: the
// filesystem metadata database, closed after it.
type sociSnapshotter struct {
	snapshots.Snapshotter
	db     *bolt.DB
	meta   *memmeta.Store   // layers' file trees
	mounts *nodedisk.Mounts // soci's filesystem, with its lazy mounts recorded
	sess   *sessions        // nil: lazy mounts end with the process
}

// Cleanup forwards soci's snapshots.Cleaner.
func (s *sociSnapshotter) Cleanup(ctx context.Context) error {
	if c, ok := s.Snapshotter.(snapshots.Cleaner); ok {
		return c.Cleanup(ctx)
	}
	return nil
}

// Close unmounts every lazily mounted layer, then closes the databases.
// With sessions, lazy mounts are left to the next process instead.
func (s *sociSnapshotter) Close() error {
	s.sess.handover()
	err := s.Snapshotter.Close()
	s.sess.close()
	if s.db != nil {
		err = errors.Join(err, s.db.Close())
	}
	return err
}

// newSoci assembles soci's snapshotter from its exported parts, as soci's
// own service package does, but returning errors: soci's
// NewSociSnapshotterService ends the process with log.Fatalf when the
// filesystem or snapshotter cannot start (a failed restore after a restart,
// say). The layout under root is soci's: snapshotter/ (snapshots and their
// metadata), soci/ (FUSE state), content/ (the "soci" content store).
//
// Layers' file trees are kept in memory up to memEntries entries, then in
// soci's metadata store.
//
// With sess, lazy mounts survive restarts (see sessions).
func newSoci(ctx context.Context, root string, cfg *config.Config, memEntries int64, hosts source.RegistryHosts, sess *sessions) (*sociSnapshotter, store.Store, error) {
	log := logr.FromContextOrDiscard(ctx)
	layout := nodedisk.Layout{Root: root}
	snRoot, fsRoot := layout.Snapshots(), layout.FS()
	for _, d := range []string{snRoot, fsRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, nil, err
		}
	}
	// Before soci opens anything: what an earlier process left is removed
	// or checked, never trusted as it is.
	cleaned, err := nodedisk.Clean(layout)
	if err != nil {
		return nil, nil, err
	}
	if cleaned.SpanDirs > 0 || cleaned.MetadataBytes > 0 || cleaned.Ingest > 0 || len(cleaned.Corrupt) > 0 {
		log.Info("removed state an earlier run left", "spanCacheDirs", cleaned.SpanDirs, "spanCacheBytes", cleaned.SpanBytes,
			"fileTreeStoreBytes", cleaned.MetadataBytes, "halfWrittenBlobs", cleaned.Ingest, "corruptBlobs", cleaned.Corrupt)
	}
	md, db, err := metadataStore(root, cfg)
	if err != nil {
		return nil, nil, err
	}
	meta := memmeta.New(memEntries, md)
	meta.OnFallback = func(layer, used, budget int64) {
		log.Info("layer file tree kept on disk: the in-memory budget is spent; mounts of large layers are slower",
			"layerEntries", layer, "inMemory", used, "budget", budget, "setting", "[hermes] memory_metadata_entries")
	}
	fail := func(err error) (*sociSnapshotter, store.Store, error) {
		if db != nil {
			db.Close()
		}
		return nil, nil, err
	}

	opq := layer.OverlayOpaqueTrusted
	userxattr, err := overlayutils.NeedsUserXAttr(snRoot)
	if err != nil {
		log.Error(err, "cannot tell whether overlayfs needs userxattr; assuming not")
	}
	if userxattr {
		opq = layer.OverlayOpaqueUser
	}
	fsOpts := []socifs.Option{
		socifs.WithGetSources(source.FromDefaultLabels(hosts)),
		socifs.WithMetadataStore(meta.NewReader),
		socifs.WithOverlayOpaqueType(opq),
		socifs.WithPullModes(cfg.PullModes),
		socifs.WithResolverConfig(cfg.ResolverConfig),
	}
	if cfg.MaxConcurrency != 0 {
		fsOpts = append(fsOpts, socifs.WithMaxConcurrency(cfg.MaxConcurrency))
	}
	sfs, err := socifs.NewFilesystem(ctx, fsRoot, cfg.FSConfig, fsOpts...)
	if err != nil {
		return fail(fmt.Errorf("soci filesystem: %w", err))
	}
	// A second handle on the content store soci's filesystem uses: the
	// index sources copy indexes and zTOCs into it.
	st, err := store.NewContentStore(
		store.WithType(cfg.ContentStoreConfig.Type),
		store.WithContainerdAddress(cfg.ContentStoreConfig.ContainerdAddress),
		store.WithSnapshotterRoot(root),
	)
	if err != nil {
		return fail(fmt.Errorf("soci content store: %w", err))
	}
	// Lazy mounts served by package fusesession (surviving restarts), soci's
	// filesystem for the rest; nodedisk records the mounts either way.
	var lfs snbase.FileSystem = sfs
	if sess != nil {
		if lfs, err = sess.wrap(ctx, sfs, fsRoot, cfg, hosts, meta.NewReader, st, opq); err != nil {
			return fail(fmt.Errorf("FUSE sessions: %w", err))
		}
	}
	fs := nodedisk.TrackMounts(lfs)

	// At least 1 byte: package snapshotter marks layers without a zTOC with
	// size 0, so that soci unpacks them without first trying (and warning
	// about) a FUSE mount. No real layer is smaller.
	snOpts := []snbase.Opt{snbase.WithAsynchronousRemove, snbase.WithMinLayerSize(max(cfg.MinLayerSize, 1))}
	if cfg.SnapshotterConfig.AllowInvalidMountsOnRestart {
		snOpts = append(snOpts, snbase.AllowInvalidMountsOnRestart)
	}
	if cfg.PullModes.Parallel.Enable {
		snOpts = append(snOpts, snbase.ParallelPullUnpack)
	}
	sn, err := snbase.NewSnapshotter(ctx, snRoot, fs, snOpts...)
	if err != nil {
		sess.close()
		return fail(fmt.Errorf("soci snapshotter: %w", err))
	}
	sess.finish()
	return &sociSnapshotter{Snapshotter: sn, db: db, meta: meta, mounts: fs, sess: sess}, st, nil
}

// metadataStore opens the store soci keeps each lazily mounted layer's file
// tree in: "db" is one bbolt file for all layers, "db-multi" one per layer
// (no writer lock shared between layers mounting at once).
func metadataStore(root string, cfg *config.Config) (metadata.Store, *bolt.DB, error) {
	opts := &bolt.Options{
		NoFreelistSync:  true,
		InitialMmapSize: 64 << 20,
		FreelistType:    bolt.FreelistMapType,
		NoSync:          cfg.MetadataDBNoSync,
	}
	switch cfg.MetadataStore {
	case "", "db":
		db, err := bolt.Open(nodedisk.Layout{Root: root}.MetadataDB(), 0o600, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("soci metadata database: %w", err)
		}
		return func(sr *io.SectionReader, toc ztoc.TOC, o ...metadata.Option) (metadata.Reader, error) {
			return metadata.NewReader(db, sr, toc, o...)
		}, db, nil
	case "db-multi":
		dir := nodedisk.Layout{Root: root}.MetadataDir() // emptied by nodedisk.Clean
		return metadata.NewMultiReader(dir, metadata.DBMultiOptions{BoltOptions: opts}), nil, nil
	default:
		return nil, nil, fmt.Errorf("%w: metadata_store %q: want \"db\" or \"db-multi\"", ErrConfig, cfg.MetadataStore)
	}
}
