// Package imagegen builds deterministic synthetic OCI images for tests and
// benchmarks, pushes them with go-containerregistry, and says what their
// merged filesystem must look like.
//
// A Spec lists layers bottom to top. Each Layer is generated as a tar stream
// from a seeded PRNG, so the same Spec always yields byte-identical layers and
// therefore identical digests: fixed mtimes (Epoch), generated entries in
// sorted order, explicit entries in the order given, a fixed gzip level and
// block size. Layer kinds:
//
//   - Random: incompressible files (the worst case for compression).
//   - Compressible: a distribution-like tree of text, source files and
//     ELF-like shared libraries, drawn from a per-layer vocabulary with
//     Zipf-like frequencies, that gzips about 3:1.
//   - Busybox: Debian's busybox-static (/bin/busybox) plus applet symlinks
//     (sh, cat, sha256sum, ls, sleep, ...), /etc/passwd and the usual
//     top-level directories, so containers can run a shell. Its bytes come
//     from the host, so digests of images with it are stable per host
//     package version only.
//   - Files: an explicit list of Entries: any tar type, xattrs (PAX
//     SCHILY.xattr), owners, modes, literal content or generated content of
//     any size (Fill: zeros, random, sparse-like, text).
//
// Layers are gzip (application/vnd.oci.image.layer.v1.tar+gzip) unless
// Layer.Uncompressed asks for a plain tar layer.
//
// Generation streams: one goroutine writes the tar while others compress it
// in 1 MiB blocks (klauspost/pgzip, deterministic whatever the core count),
// so multi-GB layers never sit in memory. The blob is kept in a cache keyed by
// a hash of the layer spec, the generator version (genVersion) and a
// fingerprint of the compressor, so repeated test and benchmark runs do not
// regenerate it. A cached blob is re-hashed before reuse when it is at most
// 256 MiB, size-checked otherwise (registries verify digests on push):
//
//	$HERMES_CACHE/imagegen/            (default ~/.cache/hermes/imagegen)
//	├── <key>.blob                     the layer blob as pushed (gzip or tar)
//	└── <key>.json                     its digest, diffID and sizes
//
// The directory may be deleted at any time.
//
// Entry points:
//
//	Image(spec)            one image (linux/amd64 unless Spec.Platform says otherwise)
//	Index(specs)           a multi-platform index, one manifest per platform key
//	EdgeCase()             a Spec whose layers exercise tar corner cases
//	PresetRandom           benchmark image (R): busybox + n random layers
//	PresetCompressible     benchmark image (C): busybox + a ~3:1 tree over n layers
//	Demo()                 the small image `make demo` uses
//	ParseLayers, ParseSize the CLI's layer syntax ("random:270MiB,compressible:1GB")
//	Push(ctx, ref, x)      push an image or index (plain HTTP for loopback hosts)
//	Tree(img)              the merged filesystem after applying all layers
//	CompareDir(dir, tree)  differences between a mounted/unpacked image and Tree
//
// The command tools/imagegen/cmd/imagegen wraps these for the demo and the
// benchmarks.
//
// Key terms: a "whiteout" is a `.wh.<name>` tar entry deleting <name> from
// lower layers; an "opaque directory" holds a `.wh..wh..opq` entry and hides
// all lower-layer content of that directory.
package imagegen
