package harness

import (
	"os"
	"path/filepath"
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
