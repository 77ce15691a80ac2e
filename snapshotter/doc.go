// Package snapshotter is the node half of Hermes: a containerd snapshotter
// that wraps soci-snapshotter's (used as a library, unforked) and decides,
// once per image manifest, where that image's SOCI index comes from.
//
// Key terms:
//
//   - Image: what containerd tells a snapshotter on Prepare through labels,
//     the image reference (containerd.io/snapshot/cri.image-ref) and the
//     digest of the platform's image manifest
//     (containerd.io/snapshot/cri.manifest-digest), which is the subject of a
//     SOCI v1 index.
//   - Source: a place a SOCI index may live. Fetching from a Source copies
//     the index and its zTOCs into soci's local content store.
//     CacheRegistry asks the Hermes cache registry's Referrers API;
//     Upstream discovers an index next to the image at its own registry, as
//     soci itself would (v2 annotation, then v1 referrers).
//   - Resolver: asks the sources in order and remembers the answer per
//     manifest digest (positive answers for good, negative ones for a short
//     TTL), with one lookup in flight per digest.
//   - Snapshotter: the snapshots.Snapshotter containerd talks to. On the
//     first Prepare of an unpack it resolves the image; with an index it
//     hands soci the index digest label, so soci mounts the layer lazily from
//     its local store; without, it removes containerd.io/snapshot.ref so soci
//     prepares a plain local snapshot and containerd unpacks the layer itself.
//
// Why the wrapper decides before soci sees the Prepare: soci remembers the
// result of its own index discovery per manifest digest for the life of the
// process, failures included. Letting soci discover and fail would pin that
// image to full pulls until a restart, even after Hermes builds its index.
// With the explicit index label soci reads the index and every zTOC from its
// local store only, so layer bytes are all it ever asks the origin for.
package snapshotter
