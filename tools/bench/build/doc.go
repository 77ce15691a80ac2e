// Package build benchmarks SOCI index builds (`go test -bench . -benchtime
// 1x`): `hermes build` end to end from a loopback origin, one-pass and
// staged, against soci-snapshotter's own IndexBuilder path and the
// physical limit (`gzip -dc` of the same layers on two workers), for a
// random image (R) and a compressible one (C). It writes build.json and a
// readable build.txt into $HERMES_BENCH_OUT (default <repo>/.bench).
//
// Two settings add rows, both off by default to keep the run to minutes:
//
//   - HERMES_BENCH_HUGE=20GiB adds image H, one incompressible layer of
//     that size with file alignment on, which an origin in the benchmark
//     generates while it streams (imagegen.StreamedLayer; nothing stored but
//     its digests): `hermes build`'s peak RSS on a layer too big for a
//     zTOC in memory. The first run reads the layer once more for its
//     digest (about half a minute per 10 GiB); a 20 GiB build takes about a
//     minute on two cores, and ~0.7 GB of temp disk.
//   - HERMES_BENCH_BASELINE=/path/to/hermes runs that binary (say, built
//     from an earlier commit) next to this one on every image, for
//     before/after numbers from the same run.
package build
