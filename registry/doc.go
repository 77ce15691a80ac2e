// Package registry is the Hermes cache registry: an http.Handler serving
// the OCI distribution API from distribution v3 (used as a library), with
// what Hermes needs on top:
//
//   - the OCI v1.1 Referrers API (GET /v2/<name>/referrers/<digest>), which
//     distribution lacks, answered even when the subject manifest lives
//     upstream and not here; the referrer sets are kept in the registry's own
//     storage driver (package referrers). A long list is paginated as the
//     spec says: each page ends with Link: <...?last=<digest>>; rel="next";
//   - mirror names: containerd's mirror requests (/v2/library/nginx/...?ns=docker.io)
//     are served from the cache repository docker.io/library/nginx (package
//     names owns the mapping), and every name is validated before
//     distribution sees it;
//   - mirrored images: the builder stores the image manifest (and the index
//     of a multi-platform image) it indexed, and its tag, in the cache
//     repository, so that clients inspecting the cache (oras discover,
//     crane manifest) find the subject of its referrers. Such a manifest is
//     stored without its layers, config or child manifests (distribution's
//     reference checks are skipped for it, never for referrers); whatever
//     it references that the cache lacks answers a plain 404, BLOB_UNKNOWN
//     or MANIFEST_UNKNOWN, so a client using the cache as a mirror falls
//     through to the next host;
//   - mirrors never resolve tags here: a manifest read by tag with ?ns=
//     answers 404 MANIFEST_UNKNOWN, since a tag stored by the builder can be
//     older than the origin's; by digest it is served;
//   - write authentication (htpasswd or a bearer token from files), with
//     anonymous reads by default; a registry without a write credential
//     refuses to start unless anonymous writes are explicitly allowed;
//   - Prometheus metrics and a health/readiness handler for a separate port.
//
// New builds the handler from a Config; hermes-registry (cmd/hermes-registry)
// serves it alone and hermes-controller embeds it.
//
// Request path, outermost first:
//
//	metrics, panic guard -> route + name rewrite (?ns=) -> auth
//	  -> /referrers/: the referrers cache (package referrers)
//	  -> anything else: distribution's App, whose manifest service is
//	     wrapped to record and forget referrers (distribution.go)
package registry
