// Package profile is the format of a learned prefetch profile: which spans
// (zTOC span ids) and which uncompressed byte ranges (page granular) of each
// indexed layer of one image manifest the workload read in its first
// seconds, with how many runs read each. A node records one, the controller
// validates it against the image's SOCI index and zTOCs (Validate), merges
// it with the profile already in the cache (Merge) and pushes the result as
// an OCI artifact of type ArtifactType whose subject is the image manifest
// (found through package registry/artifacts). A node's snapshotter plans its
// prefetch from it (package snapshotter/prefetch).
//
// Everything a profile carries comes from a node, so it is untrusted: Parse
// bounds its size before decoding, Validate admits only spans and pages of
// this image's own indexed layers, and Merge keeps the result within the
// same bounds, dropping the least-read entries, deterministically (the same
// inputs give the same bytes, so replicas racing push the same digest).
//
// The package is cgo-free: it needs only the zTOCs' span counts and
// uncompressed sizes (Layer), which the caller reads from the zTOCs.
package profile
