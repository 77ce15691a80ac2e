// Package registry is the Hermes cache registry: an http.Handler serving
// the OCI distribution API from distribution v3 (used as a library), with
// what Hermes needs on top:
//
//   - the OCI v1.1 Referrers API (GET /v2/<name>/referrers/<digest>), which
//     distribution lacks, answered even when the subject manifest lives
//     upstream and not here; the referrer sets are kept in the registry's own
//     storage driver (package referrers);
//   - mirror names: containerd's mirror requests (/v2/library/nginx/...?ns=docker.io)
//     are served from the cache repository docker.io/library/nginx (package
//     names owns the mapping), and every name is validated before
//     distribution sees it;
//   - write authentication (htpasswd or a bearer token from files), with
//     anonymous reads by default;
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
