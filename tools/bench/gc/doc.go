// Package gc benchmarks the cache registry's online garbage collection
// (registry/gc) on a cache holding 5,000 artifacts, half of them deleted:
// how long a collection takes, the registry's peak RSS (VmHWM), and the
// latency other clients see meanwhile: p99 of Referrers API lookups while
// the collection runs ÷ p99 of the same paced load just before it, in one
// run, side by side.
//
// The cache is written quickly through the registry library (registry.New
// over filesystem storage, driven over its HTTP API in-process): 100
// repositories of 50 artifacts, each a small synthetic SOCI-like index
// (artifactType SOCI v1, subject = a mirrored image manifest stored and
// tagged in the repository, an empty config, a zTOC-sized blob shared by
// the repository and two of its own). Half the indexes are then deleted
// through the API, as the controller does. hermes-registry is then started
// over that storage as its own process, with --blob-gc-grace 1s and the first
// collection due --blob-gc-interval after start; lookups from 8 clients paced at
// 400/s (no coordinated omission) run before and through it.
//
//	cd tools && go test -run '^$' -bench GC -benchtime 1x -timeout 30m ./bench/gc
//
// Goals: a collection < 60 s, < 256 MiB, p99 ratio ≤ 2.
// Settings (environment): HERMES_BENCH_GC_ARTIFACTS (default 5000).
// Results: $HERMES_BENCH_OUT/gc.json and gc.txt (default <repo>/.bench).
package gc
