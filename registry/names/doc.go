// Package names owns how artifacts are named in the Hermes cache registry.
//
// The cache keeps every source repository under a name that includes the
// source registry's host, so images of the same path on different registries
// never share a repository:
//
//	nginx                                 -> docker.io/library/nginx
//	index.docker.io/library/nginx         -> docker.io/library/nginx
//	registry-1.docker.io/nginx            -> docker.io/library/nginx
//	ghcr.io/org/app                       -> ghcr.io/org/app
//	Registry.Example.com/team/app         -> registry.example.com/team/app
//	127.0.0.1:5000/test/img               -> 127.0.0.1_5000/test/img
//	[2001:db8::1]:5000/app                -> ip6__20010db8000000000000000000000001_5000/app
//
// Host mapping. A repository path component may only hold lower-case letters,
// digits and the separators ".", "_", "__" and "-" (the distribution spec's
// grammar), so the host becomes the first component by these rules:
//
//   - the host is lower-cased (host names are case-insensitive);
//   - index.docker.io and registry-1.docker.io fold into docker.io, and a
//     single-component Docker Hub path gets the "library/" prefix, exactly as
//     Docker's own normalization does;
//   - a port is kept and joined with a single "_" ("host:5000" ->
//     "host_5000"), digits exactly as written;
//   - an IPv6 literal becomes "ip6__" followed by the 32 lower-case hex digits
//     of the address ("[::1]" -> "ip6__00000000000000000000000000000001").
//
// Host names never contain "_", so the mapping is injective: no two hosts
// share a first component.
//
// Mirror requests. containerd sends requests for a registry it treats as a
// mirror with the source host in the "ns" query parameter
// (/v2/library/nginx/manifests/latest?ns=docker.io). FromMirror turns such a
// path and ns into the same cache repository that Repository gives for the
// image reference; without ns the path already is the cache repository.
//
// ParseReference normalizes the image strings users and Pods write.
package names
