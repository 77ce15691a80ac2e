// Package artifacts owns how Hermes' artifacts are named and found in a
// registry: the cache repository of an image, the artifact types, the
// annotations Hermes writes on an index, the Referrers lookup and the rules
// for choosing among several indexes of one image manifest. The builder's
// idempotency check, the snapshotter's cache and upstream sources, the
// controller and garbage collection all call it; nothing else spells an
// artifact type or splices a cache location.
//
// Layout in the cache registry for image 127.0.0.1:5000/team/app (the
// repository comes from package registry/names):
//
//	<cache>/127.0.0.1_5000/team/app
//	├── manifests/<index digest>   SOCI v1 index: an OCI image manifest with
//	│                              artifactType SOCIIndexV1 and subject = the
//	│                              platform image manifest; annotations
//	│                              AnnotationCreated, AnnotationSettings,
//	│                              AnnotationBuildTool, AnnotationPlatform
//	├── blobs/<zTOC digest>        one per indexed layer
//	└── /referrers/<manifest digest>?artifactType=SOCIIndexV1
//	                               lists the indexes of that manifest
//
// Choosing. A manifest may have several indexes: rebuilt with other
// settings, or built twice by replicas racing. Selector keeps the ones that
// match (settings, build tool, platform) and takes the newest by
// AnnotationCreated; indexes without it (made by other tools) count as
// oldest, and ties go to the lowest digest, so every reader of the same
// list picks the same index.
//
// The package is cgo-free (the registry builds without cgo), so the
// artifact types are spelled here rather than imported from soci, whose
// package needs cgo; a test in the builder checks they agree.
package artifacts
