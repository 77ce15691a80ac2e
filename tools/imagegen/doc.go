// Package imagegen builds deterministic synthetic OCI images for tests and
// benchmarks, and pushes them with go-containerregistry.
//
// A Spec lists layers bottom to top. Each Layer is generated as a tar stream
// from a seeded PRNG, so the same Spec always yields byte-identical layers and
// therefore identical digests (fixed mtimes, sorted entries, a fixed gzip
// level). Layer kinds:
//
//   - Random: incompressible files (benchmark worst case for compression).
//   - Compressible: a realistic tree of text, source files and ELF-like
//     binaries that gzips about 3:1.
//   - Busybox: Debian's busybox-static (/bin/busybox) plus applet symlinks
//     (sh, cat, sha256sum, ls, sleep, ...) so containers can run a shell.
//   - Files: an explicit list of Entries (any tar type, xattrs, owners, modes,
//     generated or literal content).
//
// Generation streams: content is produced on the fly while it is compressed,
// so multi-GB layers never sit in memory. The compressed (or plain tar) blob is
// kept in a cache directory keyed by a hash of the layer spec, so repeated test
// and benchmark runs do not regenerate it:
//
//	$HERMES_CACHE/imagegen/            (default ~/.cache/hermes/imagegen)
//	├── <spec-hash>.blob               the layer blob as pushed (gzip or tar)
//	└── <spec-hash>.json               digest, diffID and size of the blob
//
// The main entry points:
//
//	Image(spec)         one image (linux/amd64 unless Spec.Platform says otherwise)
//	Index(specs)        a multi-platform index, one manifest per platform
//	EdgeCase()          a Spec whose layers exercise tar corner cases
//	PresetRandom, PresetCompressible, Demo
//	                    the benchmark and demo images, with size parameters
//	Push(ctx, ref, x)   push an image or index (plain HTTP for loopback hosts)
//	Tree(img)           the merged filesystem after applying all layers,
//	                    the reference tests compare mounted trees against
//
// Key terms: "whiteout" is a `.wh.<name>` tar entry deleting <name> from lower
// layers; an "opaque directory" holds a `.wh..wh..opq` entry and hides all
// lower-layer content of that directory.
package imagegen
