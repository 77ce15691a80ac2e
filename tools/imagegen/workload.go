package imagegen

import (
	"sort"
	"strings"
)

// Workload picks what a starting application reads from an image of the
// presets: for each data layer (the random-* and tree-* roots), a run of
// consecutive regular files (in path order, which is their order in the
// layer) from the middle of the layer, until the runs hold about budget/50
// bytes in all. Consecutive files share spans, as the files of a package or
// a library directory do. It returns the paths (as in tree) and their bytes.
// The benchmarks share it so that they read the same files.
func Workload(tree map[string]FileInfo, budget int64) ([]string, int64) {
	byRoot := map[string][]string{}
	for p, fi := range tree {
		root, _, _ := strings.Cut(p, "/")
		if fi.Type == '0' && fi.Size > 0 && (strings.HasPrefix(root, "random-") || strings.HasPrefix(root, "tree-")) {
			byRoot[root] = append(byRoot[root], p)
		}
	}
	roots := make([]string, 0, len(byRoot))
	for r := range byRoot {
		roots = append(roots, r)
		sort.Strings(byRoot[r])
	}
	sort.Strings(roots)
	var files []string
	var total int64
	for i, r := range roots {
		target := budget / 50 * int64(i+1) / int64(len(roots)) // this layer's share
		paths := byRoot[r]
		for j := len(paths) / 2; j < len(paths) && total < target; j++ {
			files = append(files, paths[j])
			total += tree[paths[j]].Size
		}
	}
	return files, total
}
