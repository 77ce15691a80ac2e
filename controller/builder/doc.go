// Package builder turns an image in a registry into a SOCI v1 index in the
// Hermes cache registry, without containerd, root or unpacking: the
// in-cluster equivalent of `soci create` followed by `soci push`.
//
// For each selected platform manifest of the image, the Builder streams every
// layer blob from the origin registry (digest verified while it streams),
// builds the layer's zTOC, and pushes the zTOCs and then the index manifest
// to the cache registry, in the repository
// named after the normalized source repository (registry/artifacts).
// The index manifest goes last, so a half-built artifact is never
// discoverable through the Referrers API.
//
// Key terms:
//
//   - zTOC: a layer's table of contents (file names, offsets, modes) plus the
//     gzip checkpoints ("zinfo") that let a reader inflate any span of the
//     layer without reading what comes before it.
//   - span: the unit of lazy fetching, at most about SpanSize bytes of
//     uncompressed data between two checkpoints. A file of at least
//     AlignFilesFrom bytes begins a span of its own (the checkpoint goes at
//     the deflate block boundary before its data), so reading it whole
//     fetches about the file rather than up to a span on either side.
//   - SOCI v1 index: an OCI image manifest with artifactType
//     application/vnd.amazon.soci.index.v1+json whose layers are the zTOCs and
//     whose subject is the platform image manifest.
//
// Layout in the cache registry for image 127.0.0.1:5000/team/app:
//
//	<cache>/127.0.0.1_5000/team/app
//	├── blobs/<ztoc digest>          one per indexed layer
//	├── blobs/<{} digest>            the index's empty config
//	└── manifests/<index digest>     subject = platform manifest digest,
//	                                 found via /referrers/<manifest digest>
//
// With file alignment off (AlignFilesFrom 0), zTOCs are byte-identical to
// soci's own; with it, only the extra checkpoints differ, and soci's
// snapshotter reads them as any other. gzip layers are indexed in one pass
// while they stream (package gzindex: one zlib inflate feeds the
// checkpoints, the tar listing and the span digests), where soci's builder
// stages the layer in a file and reads it three times; plain tar layers go
// through a temp file and soci's ztoc.Builder.
//
// Resources are bounded: at most Config.Concurrency layers are in flight, no
// layer is ever held whole in memory, a staged layer takes one temp file, and
// every temporary file lives in a per-build directory that is removed on
// every exit path, including errors and cancellation. Memory does not grow
// with a streamed layer's size beyond its file list and span digests: the
// zTOC's checkpoints (32 KiB each, about 1 % of the uncompressed layer) go
// to a temp file as they are made and are streamed into the serialized
// zTOC (package ztocfb, soci's bytes), so a streamed layer takes about
// twice their size in temp disk instead. soci's builder, used for staged
// layers, still holds them in memory while it builds. Builds are idempotent:
// an index already in the cache for the same manifest and settings is
// reported, not rebuilt.
//
// The package is a pure client and does not log; progress is reported per
// layer through Request.Progress.
package builder
