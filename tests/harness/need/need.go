// Package need decides what an absent component means for a test: it fails
// the run in CI and skips the test elsewhere. It imports nothing of Hermes, so
// packages the harness itself uses (tools/imagegen) can call it from their
// tests without an import cycle; package harness forwards to it.
package need

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// InCI reports whether the tests run in CI, where a missing component fails
// the run instead of skipping it.
func InCI() bool { v, _ := strconv.ParseBool(os.Getenv("CI")); return v }

// Missing fails the test in CI and skips it elsewhere: the one place a test
// decides what an absent component means.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI=true: a missing component fails the run; run `make deps`)", msg)
	}
	t.Skipf("%s (skipped because CI is not set; `make deps` installs it)", msg)
}

// Root ends the test via Missing unless it runs as root (containerd, FUSE,
// mounts and file owners need it).
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "test needs root")
	}
}
