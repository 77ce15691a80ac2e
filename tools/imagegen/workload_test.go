package imagegen

import (
	"fmt"
	"testing"
)

// Workload takes consecutive files from the middle of each data layer, up
// to about a fiftieth of the budget, and nothing outside the data layers.
func TestWorkload(t *testing.T) {
	tree := map[string]FileInfo{"etc/passwd": {Type: '0', Size: 1 << 20}}
	for _, root := range []string{"random-0", "tree-1"} {
		for i := range 10 {
			tree[fmt.Sprintf("%s/f%02d", root, i)] = FileInfo{Type: '0', Size: 1000}
		}
	}
	files, total := Workload(tree, 50*4000)
	want := []string{"random-0/f05", "random-0/f06", "tree-1/f05", "tree-1/f06"}
	if fmt.Sprint(files) != fmt.Sprint(want) || total != 4000 {
		t.Fatalf("Workload = %v, %d; want %v, 4000", files, total, want)
	}
}
