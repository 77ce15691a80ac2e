// Package need is what an absent component means for the root module's
// tests: with CI=true it fails the run, elsewhere it skips the test. It is
// tests/harness/need for the packages of the root module, which cannot
// import the tests module; the two say the same.
package need

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// Missing fails the test in CI and skips it elsewhere.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("%s (CI=true: a missing component fails the run; run `make deps`)", msg)
	}
	t.Skipf("%s (skipped because CI is not set; `make deps` installs it)", msg)
}

// FUSE ends the test via Missing unless it runs as root with /dev/fuse.
func FUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "test needs root to mount FUSE")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		Missing(t, "/dev/fuse: %v", err)
	}
}
