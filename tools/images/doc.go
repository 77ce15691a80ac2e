// Package images builds Hermes' container images (hermes-controller,
// hermes-registry, hermes-snapshotter) without a Docker daemon: it builds
// each binary with the Go toolchain, statically linked, puts it in a
// one-layer image with a non-root user (go-containerregistry), and pushes
// the images, as an index when there is more than one platform.
//
// Binaries that need cgo (the controller's builder and the snapshotter link
// zlib) are linked with -extldflags -static against glibc's and zlib's
// static archives (netgo and osusergo keep glibc's NSS out). They are
// built for another architecture only when a C cross compiler for it is
// found (CC_<GOOS>_<GOARCH>, or <triple>-gcc on PATH, e.g.
// aarch64-linux-gnu-gcc with zlib1g-dev:arm64); otherwise that platform is
// skipped for them and Build says why. hermes-registry builds without cgo
// for every platform.
package images
