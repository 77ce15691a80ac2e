package registry

import "strings"

// routeKind names an endpoint of the distribution API; it is the "route"
// label of the request metrics.
type routeKind string

const (
	routeBase      routeKind = "base"
	routeCatalog   routeKind = "catalog"
	routeTags      routeKind = "tags"
	routeManifest  routeKind = "manifest"
	routeBlob      routeKind = "blob"
	routeUpload    routeKind = "blob_upload"
	routeReferrers routeKind = "referrers"
	routeOther     routeKind = "other"
)

// route is a request path taken apart: /v2/<name><suffix>, where suffix
// starts with "/manifests/", "/blobs/", "/referrers/" or is "/tags/list".
type route struct {
	kind   routeKind
	name   string // repository as requested; empty for base, catalog, other
	suffix string // the rest of the path after name
	ref    string // tag or digest for manifests, blobs and referrers
}

// parseRoute splits a request path the way distribution's router does: the
// name is the longest prefix followed by a known endpoint, so a repository
// may itself contain "manifests" or "blobs" as a component.
func parseRoute(path string) route {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return route{kind: routeBase}
		}
		return route{kind: routeOther}
	}
	switch rest {
	case "":
		return route{kind: routeBase}
	case "_catalog":
		return route{kind: routeCatalog}
	}
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok && name != "" {
		return route{kind: routeTags, name: name, suffix: "/tags/list"}
	}
	best, bestAt := "", -1
	for _, m := range []string{"/manifests/", "/blobs/", "/referrers/"} {
		if i := strings.LastIndex(rest, m); i > bestAt {
			best, bestAt = m, i
		}
	}
	if bestAt <= 0 {
		return route{kind: routeOther}
	}
	name, after := rest[:bestAt], rest[bestAt+len(best):]
	r := route{name: name, suffix: rest[bestAt:], ref: after}
	switch {
	case best == "/blobs/" && (after == "uploads/" || strings.HasPrefix(after, "uploads/")):
		r.kind, r.ref = routeUpload, strings.TrimPrefix(after, "uploads/")
		if strings.Contains(r.ref, "/") {
			return route{kind: routeOther}
		}
		return r
	case after == "" || strings.Contains(after, "/"):
		return route{kind: routeOther}
	case best == "/manifests/":
		r.kind = routeManifest
	case best == "/blobs/":
		r.kind = routeBlob
	default:
		r.kind = routeReferrers
	}
	return r
}
