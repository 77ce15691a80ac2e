// Package build benchmarks SOCI index builds (`go test -bench . -benchtime
// 1x`): `hermes build` end to end from a loopback origin, one-pass and
// staged, against soci-snapshotter's own IndexBuilder path and the
// physical limit (`gzip -dc` of the same layers on two workers), for a
// random image (R) and a compressible one (C). It writes build.json and a
// readable build.txt into $HERMES_BENCH_OUT (default <repo>/.bench).
package build
