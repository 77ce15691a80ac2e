package harness

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SnapshotterOptions configures StartHermesSnapshotter.
type SnapshotterOptions struct {
	// CacheURL is the Hermes cache registry (http://host:port); empty runs
	// without a cache.
	CacheURL string
	// HostsDir is containerd's hosts.toml directory, shared with containerd
	// so layer reads go where containerd's would.
	HostsDir string
	// ContainerdSocket is containerd's socket. soci reads image manifests
	// from containerd's content store when it unpacks a layer that has no
	// zTOC, and stalls 10 s when it cannot reach it. Empty: Dir's
	// containerd.sock, which LinkContainerd points at containerd's socket
	// once containerd runs (soci dials lazily), so the snapshotter can start
	// first and stop last.
	ContainerdSocket string
	// Config is more TOML appended to the generated file: soci sections, or
	// extra [hermes] keys as "hermes.key = value" lines (dotted keys, so
	// they need no table header).
	Config string
	// Dir reuses the directory (root, socket, log) of an earlier instance,
	// for restarts; empty makes a new one.
	Dir string
	// LogLevel defaults to debug.
	LogLevel string
	// Env is extra environment for the process.
	Env []string
	// DockerConfig is a directory with a docker config.json for image
	// registry logins ([hermes] docker_config, DOCKER_CONFIG); empty turns
	// docker_config off.
	DockerConfig string
	// Binary runs this hermes-snapshotter instead of the one built from
	// the working tree (a restart onto a replaced binary).
	Binary string
}

// HermesSnapshotter is a running hermes-snapshotter.
type HermesSnapshotter struct {
	*Process
	Dir        string
	Root       string // --root
	Socket     string // --socket: give it to ContainerdOptions.ProxySnapshotters
	ConfigPath string
	MetricsURL string // http://127.0.0.1:PORT (/metrics, /healthz)
}

// StartHermesSnapshotter builds hermes-snapshotter from the working tree,
// starts it with a generated config, and waits for /healthz. Its cleanup
// stops it with SIGTERM (it unmounts its FUSE mounts when it stops) and
// then unmounts whatever is left below Dir.
func StartHermesSnapshotter(t testing.TB, opts SnapshotterOptions) *HermesSnapshotter {
	t.Helper()
	RequireRoot(t)
	RequireFUSE(t)
	bin := opts.Binary
	if bin == "" {
		bin = HermesBin(t, "hermes-snapshotter")
	}
	dir := opts.Dir
	if dir == "" {
		dir = TempDir(t, "hsn")
	}
	// Registered before the process's own cleanup, so it runs after it: the
	// lazy mounts outlive the snapshotter (its FUSE session holder keeps
	// them), so they are unmounted here and the holder it started is
	// stopped, also for a Dir a restarting test passes in (both are
	// idempotent, so each start may register them).
	t.Cleanup(func() {
		UnmountBelow(t, dir)
		StopHolder(t, filepath.Join(dir, "root"))
	})
	s := &HermesSnapshotter{
		Dir:        dir,
		Root:       filepath.Join(dir, "root"),
		Socket:     filepath.Join(dir, "hermes.sock"),
		ConfigPath: filepath.Join(dir, "config.toml"),
	}
	port := FreePort(t)
	s.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	var b strings.Builder
	fmt.Fprintf(&b, "[hermes]\ncache_url = %q\nhosts_dir = %q\ndocker_config = %v\n", opts.CacheURL, opts.HostsDir, opts.DockerConfig != "")
	for _, l := range strings.Split(opts.Config, "\n") {
		if k, ok := strings.CutPrefix(strings.TrimSpace(l), "hermes."); ok {
			b.WriteString(k + "\n")
		}
	}
	b.WriteString("\n")
	ctrdSock := opts.ContainerdSocket
	if ctrdSock == "" {
		ctrdSock = filepath.Join(dir, "containerd.sock")
	}
	fmt.Fprintf(&b, "[content_store]\ncontainerd_address = %q\n\n", ctrdSock)
	for _, l := range strings.Split(opts.Config, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "hermes.") {
			b.WriteString(l + "\n")
		}
	}
	if err := os.WriteFile(s.ConfigPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	level := opts.LogLevel
	if level == "" {
		level = "debug"
	}
	args := []string{"--root", s.Root, "--socket", s.Socket, "--config", s.ConfigPath,
		"--metrics-address", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", level, "--log-format", "text"}
	env := opts.Env
	if opts.DockerConfig != "" {
		env = append(env, "DOCKER_CONFIG="+opts.DockerConfig)
	}
	s.Process = Start(t, "hermes-snapshotter", dir, bin, args, env...)
	WaitFor(t, s.Process, 60*time.Second, "hermes-snapshotter", func() error {
		c, err := net.DialTimeout("unix", s.Socket, time.Second)
		if err != nil {
			return err
		}
		c.Close()
		return HTTPReady(s.MetricsURL + "/healthz")()
	})
	return s
}

// LinkContainerd points the snapshotter's containerd socket (see
// SnapshotterOptions.ContainerdSocket) at containerd's socket.
func (s *HermesSnapshotter) LinkContainerd(t testing.TB, socket string) {
	t.Helper()
	link := filepath.Join(s.Dir, "containerd.sock")
	_ = os.Remove(link)
	if err := os.Symlink(socket, link); err != nil {
		t.Fatal(err)
	}
}

// HolderPID is the process ID of the FUSE session holder of a snapshotter
// root, 0 when none runs.
func HolderPID(root string) int {
	b, err := os.ReadFile(filepath.Join(root, "fusesession", "holder.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// StopHolder stops the FUSE session holder of a snapshotter root, which
// the snapshotter started in a session of its own (so that it outlives
// it), with SIGTERM.
func StopHolder(t testing.TB, root string) {
	pid := HolderPID(root)
	if pid == 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Logf("FUSE session holder %d did not stop; killing it", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
