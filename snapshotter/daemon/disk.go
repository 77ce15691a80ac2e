package daemon

import (
	"time"

	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hermes-oci/hermes/snapshotter"
	"github.com/hermes-oci/hermes/snapshotter/nodedisk"
)

// newJanitor wires node-disk reclaiming: it runs after every snapshot
// containerd removes and every disk_check_interval, between containerd's
// calls (sn's gate), over soci's snapshotter and lazy mounts, and makes
// the resolver forget the indexes it removes.
func newJanitor(root string, cfg *Config, soci *sociSnapshotter, sn *snapshotter.Snapshotter, res *snapshotter.Resolver, reg prometheus.Registerer) *nodedisk.Janitor {
	l := nodedisk.Layout{Root: root}
	// The containerd store type keeps content in containerd, under its own
	// garbage collection.
	storeType, _ := store.CanonicalizeContentStoreType(cfg.Soci.ContentStoreConfig.Type)
	j := nodedisk.New(nodedisk.Options{
		Layout:            l,
		Snapshots:         soci.Snapshotter,
		Gate:              sn.Exclusive,
		ContentGC:         storeType == store.SociContentStoreType,
		Forget:            res.ForgetIndexes,
		Cleanup:           soci.Cleanup,
		Mounts:            soci.mounts,
		SpanCacheMaxBytes: cfg.Hermes.SpanCacheMaxBytes,
		Interval:          cfg.Hermes.DiskCheckInterval.D(),
		Metrics:           nodedisk.NewMetrics(reg, l, cfg.Hermes.SpanCacheMaxBytes, 2*time.Second),
	})
	sn.OnRemove(j.Kick)
	// Content of images removed while no snapshotter ran.
	j.Kick()
	return j
}
