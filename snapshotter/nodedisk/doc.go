// Package nodedisk keeps what hermes-snapshotter stores on the node's disk
// bounded and true: it says where each kind of state lives under the
// snapshotter's root, measures it, cleans what a crash left behind before
// soci starts, removes indexes and zTOCs once no snapshot uses them, and
// evicts cached spans of idle layers when the span cache is over its cap.
//
// The layout under the root is soci's (Hermes embeds soci unforked):
//
//	<root>/
//	├── content/                  soci's local store ("soci" type): oci-layout,
//	│   ├── blobs/sha256/<hex>    SOCI indexes, zTOCs, and the whole blobs of
//	│   │                         layers soci unpacked itself (no zTOC)
//	│   └── ingest/               half-written blobs (oras-go temp files)
//	├── metadata.db               soci's bbolt file-tree store (layers that do
//	├── metadata/                 not fit memmeta's budget; "db-multi" files)
//	├── soci/spancache/<tmp>/     one directory per resolved layer: its fetched,
//	│   ├── <spanID>              uncompressed spans, and wip/ for spans being
//	│   └── wip/                  written
//	└── snapshotter/              soci's snapshots (metadata.db, snapshots/<id>/fs:
//	                              FUSE mount points or unpacked layers)
//
// Kinds, as the hermes_snapshotter_disk_bytes metric labels them: spans
// (soci/spancache), content (content/), metadata (metadata.db, metadata/)
// and snapshots (snapshotter/, containerd's to remove).
//
// Key terms:
//
//   - Clean: run before soci starts. Everything in the span cache and the
//     file-tree store belongs to a process that is gone (soci keeps which
//     spans it has, and every file tree, in memory and rebuilds both when it
//     mounts a layer), so both are removed; half-written blobs are removed
//     and every blob of the local store whose bytes do not match its digest.
//   - Janitor: runs after containerd removes snapshots and every interval
//     (and once at start). It has soci remove snapshot directories no
//     snapshot owns (a crash during a removal). Content GC keeps the SOCI indexes that a snapshot's
//     containerd.io/snapshot/remote/soci.index.digest label names, and their
//     zTOCs; everything else in the store goes, and the resolver forgets the
//     indexes removed. Span eviction: when the span cache is over its cap,
//     idle lazily mounted layers (no active snapshot or view above them, so
//     no container's rootfs and no unpack uses them) are remounted, least
//     recently used first; soci drops a layer's span cache when it unmounts
//     it, and the fresh mount fetches spans again from the registry when
//     they are read.
//   - Gate: what keeps the janitor and containerd's calls apart. The janitor
//     decides and removes only while no Prepare, View, Mounts or Remove is
//     in flight, so nothing it removes is needed by a call under way.
//
// Why whole layers and not single spans: soci's span manager remembers in
// memory which spans it has cached and fails a read (EIO) if such a span's
// file is gone; it never fetches a span twice. A layer that is remounted
// starts with an empty span state. The upstream change that would let a cap
// bound mounted layers too: fetch again on ErrSpanNotAvailable in
// fs/span-manager, or a pluggable cache.BlobCache in fs/layer.
package nodedisk
