package imagegen

// The benchmark images. Sizes are parameters so tests can build tiny
// versions of the same shape; the Bench* constants are the full sizes.
const (
	// (R): four ~270 MB incompressible layers.
	BenchRandomLayers    = 4
	BenchRandomLayerSize = 270_000_000
	// (C): a distribution-like tree that gzips ~3:1 to over 1 GB, in
	// tens of thousands of files.
	BenchCompressibleLayers = 4
	BenchCompressibleSize   = 3_300_000_000
	BenchCompressibleFiles  = 50_000
)

// PresetRandom is benchmark image (R): busybox plus n layers of
// incompressible files, layerSize bytes each (one file per 8 MiB). The full
// benchmark image is PresetRandom(BenchRandomLayers, BenchRandomLayerSize).
func PresetRandom(n int, layerSize int64) Spec {
	s := Spec{Layers: []Layer{{Kind: Busybox}}, Cmd: []string{"/bin/sh"}}
	for i := 1; i <= n; i++ {
		s.Layers = append(s.Layers, Layer{Kind: Random, Size: layerSize, Seed: int64(i)})
	}
	return s
}

// compressibleShares splits a Compressible preset over its layers the way
// real images are split: a big base, then smaller layers on top.
var compressibleShares = []int64{40, 30, 20, 10}

// PresetCompressible is benchmark image (C): busybox plus a realistic tree
// of text, source and ELF-like binaries totalling size uncompressed bytes in
// files files, over n layers (the lower ones bigger). The full benchmark
// image is PresetCompressible(BenchCompressibleLayers,
// BenchCompressibleSize, BenchCompressibleFiles).
func PresetCompressible(n int, size int64, files int) Spec {
	s := Spec{Layers: []Layer{{Kind: Busybox}}, Cmd: []string{"/bin/sh"}}
	weights := make([]int64, n)
	total := int64(0)
	for i := range weights {
		weights[i] = compressibleShares[min(i, len(compressibleShares)-1)]
		total += weights[i]
	}
	leftSize, leftFiles := size, files
	for i, w := range weights {
		ls, lf := size*w/total, int(int64(files)*w/total)
		if i == n-1 {
			ls, lf = leftSize, leftFiles
		}
		leftSize, leftFiles = leftSize-ls, leftFiles-lf
		s.Layers = append(s.Layers, Layer{Kind: Compressible, Size: ls, Files: max(lf, 1), Seed: int64(i + 1)})
	}
	return s
}

// Demo is the image `make demo` runs: busybox, a 64 MB random layer and a
// 256 MB compressible tree, small enough to build in seconds and big enough
// that lazy loading shows.
func Demo() Spec {
	s := PresetCompressible(1, 256_000_000, 4000)
	s.Layers = append(s.Layers, Layer{Kind: Random, Size: 64_000_000, Seed: 100})
	return s
}
