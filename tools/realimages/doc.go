// Package realimages builds the benchmark's real images: images no one here
// wrote, made from Debian's packages and the npm registry the way a
// Dockerfile build makes them, one gzip layer per build step.
//
// Images (Recipes):
//
//	node  Debian bookworm (debootstrap minbase) + Debian's nodejs + an app
//	      whose node_modules is `npm install` of a real framework stack (next,
//	      react, @nestjs/*, express, ...: tens of thousands of files). The
//	      workload requires them and answers HTTP 200 on $PORT (default 8080).
//	ml    Debian bookworm + python3-torch, python3-scipy, python3-pandas,
//	      python3-sklearn + the CUDA 11.8 runtime libraries of Debian's
//	      non-free component (libcublas11, libcublaslt11, libcusolver11,
//	      libcufft10, libcurand10, libnpp*). The workload imports the Python
//	      libraries, opens the CUDA libraries with ctypes.CDLL as a GPU
//	      service does at start, and answers HTTP 200 on $PORT.
//
// How a build runs (root only: debootstrap, overlayfs, chroot): the base
// step debootstraps a rootfs; each later step runs in a chroot of an
// overlayfs whose lower dirs are the earlier steps and whose upper dir
// becomes the step's layer (overlayfs whiteouts and opaque directories are
// turned into OCI .wh. entries). Steps are cached, keyed by their recipe:
//
//	$HERMES_CACHE/realimages/          (default ~/.cache/hermes/realimages)
//	├── steps/<key>/upper/             what the step changed
//	├── steps/<key>/layer.json         the step's layer: digest, diffID, size
//	└── blobs/sha256/<hex>             gzip layer blobs
//
// The images are never built in CI and never stored in the repository; the
// cluster benchmark (tools/bench/cluster) builds them on first use and pushes
// them to its origin with Push. The command tools/realimages/cmd/realimages
// builds and pushes them by hand.
package realimages
