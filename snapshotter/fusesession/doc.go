// Package fusesession keeps lazily mounted layers alive across restarts of
// hermes-snapshotter.
//
// A FUSE mount lives as long as someone holds its /dev/fuse file
// descriptor; when the serving process exits, the kernel aborts the
// connection and every process reading the layer (or faulting in pages of
// a mapped binary) gets EIO or SIGBUS. Three pieces prevent that:
//
//   - The holder ([RunHolder], `hermes-snapshotter holder`): a small
//     process that outlives the snapshotter and keeps a duplicate of every
//     lazy mount's /dev/fuse descriptor together with the mount's state
//     (mountpoint, layer, index, the kernel's INIT parameters). Descriptors
//     travel over a unix socket with SCM_RIGHTS ([Client]). The holder never
//     reads a descriptor while a snapshotter is connected; requests issued
//     while none is queue in the kernel. Once none has been connected for
//     the restart timeout it answers them with EIO, and says so in its log.
//   - The translator: every lazy mount is served through a
//     fuse.RawFileSystem that gives the kernel node IDs derived from soci's
//     inode numbers (which follow from the zTOC, so every generation
//     computes the same) and file handles tagged with the generation that
//     opened them. A new generation can therefore answer requests about
//     nodes and handles the previous one handed out: it finds the node by
//     walking the layer's tree, and reopens the file.
//   - [FS]: soci's snapshot.FileSystem with lazy mounts done on Hermes'
//     side (soci's layer resolver, go-fuse, the translator) and everything
//     else forwarded to soci's own filesystem. At start it takes the held
//     descriptors back, parks the held mounts out of the way of soci's
//     restore (which force-unmounts, and so aborts, every mount below its
//     snapshots directory), and when soci restores a snapshot whose mount
//     is held, re-serves the held connection in place of a new mount; the
//     kernel is asked (FUSE_NOTIFY_RESEND) to resend requests the previous
//     process had read but not answered.
//
// soci is embedded unforked. Upstream changes that would make this
// simpler: a Filesystem hook to restore a mount from an existing /dev/fuse
// descriptor, restore without MNT_FORCE (which aborts connections), and
// an exported way to get a mounted layer's Layer.
package fusesession
