// Package gc is the cache registry's online garbage collector: it removes
// blobs no stored manifest references, untagged manifests nothing refers
// to, stale referrer records and abandoned uploads, while the registry
// keeps serving reads and pushes. distribution's own collector
// (registry garbage-collect) must run with the registry stopped; this one
// does not.
//
// A run (Collector.Run) has two phases over one storage driver
// (filesystem, S3, any of registry/drivers):
//
//   - mark: every manifest that is tagged, is a referrer (it has a record
//     in package referrers: SOCI indexes, the zTOC catalog's records), is
//     the subject of a referrer in its repository, is a child of a live
//     index, or was written less than the grace period ago is live; every
//     blob a live manifest names (config, layers, blobs) is live, and so is
//     the manifest's own content. A manifest whose references cannot be
//     read stops the run before anything is deleted.
//   - sweep: what is not live and older than the grace period goes: the
//     revision links of dead manifests, blob data with every repository's
//     link to it, referrer records whose manifest is gone, upload
//     directories without activity.
//
// Pushes during a run. A client pushes blobs first and the manifest naming
// them last, so between the two its blobs are referenced by nothing. They
// survive because:
//
//   - anything written (blob data, a repository's link to a blob by upload
//     or cross-repository mount, a manifest) less than Grace before the
//     run started is kept;
//   - the registry reports every use of a digest to InUse before serving
//     it (blob HEAD and GET, upload completion, mount, and each digest a
//     manifest PUT names), and a blob used since the grace cut-off is kept.
//     InUse serializes the use with the deletion of that digest, so a use
//     either comes first (the blob is kept) or sees the blob gone (the
//     client uploads it again, or the manifest PUT fails with
//     MANIFEST_BLOB_UNKNOWN, which the builder retries).
//
// InUse sees the uses of its own process only: with several replicas over
// shared storage, run the collector on one (the controller's leader) and
// keep the grace longer than a build; a push through another replica that
// loses the race fails its final manifest PUT and is retried.
package gc
