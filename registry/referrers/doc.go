// Package referrers keeps the OCI referrer sets of the Hermes cache
// registry: for each repository and subject digest, the descriptors of the
// manifests whose "subject" field names that digest.
//
// distribution v3 has no Referrers API, so the registry records a referrer
// when a manifest with a subject is stored and forgets it when the manifest
// is deleted. The set lives in the registry's own storage driver (Driver),
// so it survives restarts and is shared by every replica over the same
// object store. Each referrer is its own object, written once: concurrent
// pushes for one subject never read-modify-write a shared list, so none is
// lost.
//
// Cache answers lookups from memory and renders the OCI image index the
// Referrers API returns, a page at a time (Query, Page): a long list is
// read in pages bounded by count and by bytes, each starting after the last
// referrer (by digest) of the one before. Memory is an in-memory Store for
// unit tests.
// storetest holds the conformance suite every Store passes.
package referrers
