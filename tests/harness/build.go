package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// hermesCmds maps Hermes binaries to their main packages in the root module.
var hermesCmds = map[string]string{
	"hermes-registry":    "./registry/cmd/hermes-registry",
	"hermes-snapshotter": "./snapshotter/cmd/hermes-snapshotter",
	"hermes-controller":  "./controller/cmd/hermes-controller",
	"hermes":             "./controller/cmd/hermes",
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// RepoRoot returns the repository root (the directory holding go.work).
func RepoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		d = parent
	}
}

// HermesBin builds one of Hermes' own binaries from the working tree (once
// per test process; Go's build cache makes repeats cheap) and returns its
// path, so tests never run a stale binary.
func HermesBin(t testing.TB, name string) string {
	t.Helper()
	pkg, ok := hermesCmds[name]
	if !ok {
		t.Fatalf("unknown hermes binary %q", name)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Test packages run in parallel processes: each builds to a private
	// name and renames it into place, so a running binary is never
	// overwritten and no process sees a half-written file. Each checkout
	// (git worktree) has a directory of its own, so two trees tested at
	// once never run each other's binaries.
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(CacheDir(), "test-bin", hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	t0 := time.Now()
	cmd := exec.Command("go", "build", "-o", tmp, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %s", name, time.Since(t0).Round(time.Millisecond))
	built[name] = out
	return out
}
