package registry

import "testing"

func TestParseRoute(t *testing.T) {
	for path, want := range map[string]route{
		"/v2/":                               {kind: routeBase},
		"/v2":                                {kind: routeBase},
		"/v2/_catalog":                       {kind: routeCatalog},
		"/v2/library/nginx/tags/list":        {kind: routeTags, name: "library/nginx", suffix: "/tags/list"},
		"/v2/library/nginx/manifests/latest": {kind: routeManifest, name: "library/nginx", suffix: "/manifests/latest", ref: "latest"},
		"/v2/a/manifests/b/manifests/c":      {kind: routeManifest, name: "a/manifests/b", suffix: "/manifests/c", ref: "c"},
		"/v2/a/blobs/sha256:abc":             {kind: routeBlob, name: "a", suffix: "/blobs/sha256:abc", ref: "sha256:abc"},
		"/v2/a/b/blobs/uploads/":             {kind: routeUpload, name: "a/b", suffix: "/blobs/uploads/"},
		"/v2/a/blobs/uploads/123-abc":        {kind: routeUpload, name: "a", suffix: "/blobs/uploads/123-abc", ref: "123-abc"},
		"/v2/x/blobs/blobs/uploads/":         {kind: routeUpload, name: "x/blobs", suffix: "/blobs/uploads/"},
		"/v2/docker.io/library/nginx/referrers/sha256:1": {kind: routeReferrers, name: "docker.io/library/nginx", suffix: "/referrers/sha256:1", ref: "sha256:1"},
		"/v2/a/manifests/":        {kind: routeOther},
		"/v2/a/manifests/b/c":     {kind: routeOther},
		"/v2/manifests/x":         {kind: routeOther},
		"/v2/a/unknown":           {kind: routeOther},
		"/metrics":                {kind: routeOther},
		"/v2/a/blobs/uploads/x/y": {kind: routeOther},
	} {
		if got := parseRoute(path); got != want {
			t.Errorf("parseRoute(%q) = %+v, want %+v", path, got, want)
		}
	}
}
