package harness

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// BenchOut returns the directory benchmarks write their JSON and tables to,
// creating it: $HERMES_BENCH_OUT, or .bench at the repository root.
func BenchOut(tb testing.TB) string {
	tb.Helper()
	out := os.Getenv("HERMES_BENCH_OUT")
	if out == "" {
		root, err := RepoRoot()
		if err != nil {
			tb.Fatal(err)
		}
		out = filepath.Join(root, ".bench")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		tb.Fatal(err)
	}
	return out
}

// WriteBench writes a benchmark's results as <name>.json (v, indented) and
// <name>.txt (the readable table) into BenchOut, and logs the table.
func WriteBench(tb testing.TB, name string, v any, table string) {
	tb.Helper()
	out := BenchOut(tb)
	j, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	for file, data := range map[string][]byte{name + ".json": append(j, '\n'), name + ".txt": []byte(table)} {
		if err := os.WriteFile(filepath.Join(out, file), data, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Logf("results in %s/%s.{json,txt}\n%s", out, name, table)
}

// Median is the median of xs (0 for none), the statistic every benchmark
// reports over its repetitions.
func Median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
