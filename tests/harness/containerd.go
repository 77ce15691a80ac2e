package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Namespace is the containerd namespace tests use; it is the CRI's, so that
// what a test sees matches what a kubelet would.
const Namespace = "k8s.io"

// ContainerdOptions configures StartContainerd.
type ContainerdOptions struct {
	// ProxySnapshotters maps snapshotter names to the unix socket of a proxy
	// snapshotter (such as hermes-snapshotter). Each gets a transfer-service
	// unpack entry and the image-fs directory the kubelet expects.
	ProxySnapshotters map[string]string
	// HostsDir is the hosts.toml directory (config_path) for registry hosts;
	// empty makes one under the root. Write entries with WriteHosts.
	HostsDir string
	// CRI enables the CRI plugin (for a kubelet); off, containerd starts
	// faster and needs no CNI.
	CRI bool
	// CRISnapshotter is the CRI's snapshotter (default overlayfs).
	CRISnapshotter string
	// SandboxImage is the CRI's pinned sandbox (pause) image.
	SandboxImage string
	// RuntimeSnapshotters adds CRI runtime handlers (for RuntimeClasses),
	// each runc with its own snapshotter: handler name -> snapshotter.
	RuntimeSnapshotters map[string]string
	// ProxyAnnotations makes containerd pass the remote-snapshot labels
	// (cri.image-ref, cri.manifest-digest, ...) to proxy snapshotters on
	// transfer-service pulls (`ctr image pull`), as soci needs.
	ProxyAnnotations bool
}

// Containerd is a running containerd v2 with its own root, state and socket.
type Containerd struct {
	*Process
	Dir      string // everything of this instance lives below Dir
	Root     string
	State    string
	Socket   string
	HostsDir string
	Config   string
	ctr      string
}

// StartContainerd starts containerd with a generated config and waits for
// its socket. The cleanup kills every task it runs, stops it by PID, kills
// leftover shims and unmounts what is left below its root.
func StartContainerd(t testing.TB, opts ContainerdOptions) *Containerd {
	t.Helper()
	RequireRoot(t)
	bin := Bin(t, "containerd")
	ctr := Bin(t, "ctr")
	shim := Bin(t, "containerd-shim-runc-v2")
	if _, err := exec.LookPath("runc"); err != nil {
		Missing(t, "runc not in $PATH: %v", err)
	}
	dir := TempDir(t, "ctrd")
	c := &Containerd{
		Dir:      dir,
		Root:     filepath.Join(dir, "root"),
		State:    filepath.Join(dir, "state"),
		Socket:   filepath.Join(dir, "containerd.sock"),
		HostsDir: opts.HostsDir,
		Config:   filepath.Join(dir, "config.toml"),
		ctr:      ctr,
	}
	if c.HostsDir == "" {
		c.HostsDir = filepath.Join(dir, "certs.d")
	}
	for _, d := range []string{c.Root, c.State, c.HostsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	names := make([]string, 0, len(opts.ProxySnapshotters))
	for name := range opts.ProxySnapshotters {
		names = append(names, name)
		// The CRI reports this as the image filesystem; the kubelet's
		// eviction manager fails if it does not exist.
		if err := os.MkdirAll(filepath.Join(c.Root, "io.containerd.snapshotter.v1."+name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(names)
	if err := os.WriteFile(c.Config, []byte(c.config(opts, names)), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Dir(shim) + string(os.PathListSeparator) + os.Getenv("PATH")
	c.Process = Start(t, "containerd", dir, bin, []string{"--config", c.Config, "--log-level", "debug"},
		"PATH="+path, "OTEL_SDK_DISABLED=true")
	WaitFor(t, c.Process, 30*time.Second, "containerd socket", func() error {
		_, err := RunErr(5*time.Second, ctr, "-a", c.Socket, "version")
		return err
	})
	// Cleanups run last registered first: tasks are killed while
	// containerd still answers, then containerd stops and leftovers go.
	t.Cleanup(func() { c.sweep(t) })
	t.Cleanup(func() { c.killTasks(t) })
	return c
}

func (c *Containerd) config(opts ContainerdOptions, proxies []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version = 3\nroot = %q\nstate = %q\n", c.Root, c.State)
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n", c.Socket, c.Socket+".ttrpc")
	if !opts.CRI {
		b.WriteString(`disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim", "io.containerd.nri.v1.nri"]` + "\n")
	}
	b.WriteString("[plugins]\n")
	fmt.Fprintf(&b, "  [plugins.'io.containerd.transfer.v1.local']\n    config_path = %q\n", c.HostsDir)
	if len(proxies) > 0 {
		// Listing unpack entries replaces the default, so overlayfs is kept.
		for _, sn := range append([]string{"overlayfs"}, proxies...) {
			fmt.Fprintf(&b, "    [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]\n      platform = \"linux/amd64\"\n      snapshotter = %q\n", sn)
		}
	}
	if opts.CRI {
		sn := opts.CRISnapshotter
		if sn == "" {
			sn = "overlayfs"
		}
		fmt.Fprintf(&b, "  [plugins.'io.containerd.cri.v1.images']\n    snapshotter = %q\n", sn)
		if opts.SandboxImage != "" {
			fmt.Fprintf(&b, "    [plugins.'io.containerd.cri.v1.images'.pinned_images]\n      sandbox = %q\n", opts.SandboxImage)
		}
		fmt.Fprintf(&b, "    [plugins.'io.containerd.cri.v1.images'.registry]\n      config_path = %q\n", c.HostsDir)
		fmt.Fprintf(&b, `  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "runc"
          SystemdCgroup = false
          Root = %q
%s    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%q]
      conf_dir = %q
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`, filepath.Join(c.Dir, "runc"), c.runtimes(opts), filepath.Join(c.Dir, "cni", "bin"), filepath.Join(c.Dir, "cni", "net.d"))
	}
	if len(proxies) > 0 {
		b.WriteString("[proxy_plugins]\n")
		for _, name := range proxies {
			fmt.Fprintf(&b, "  [proxy_plugins.%s]\n    type = \"snapshot\"\n    address = %q\n", name, opts.ProxySnapshotters[name])
			if opts.ProxyAnnotations {
				fmt.Fprintf(&b, "    [proxy_plugins.%s.exports]\n      enable_remote_snapshot_annotations = \"true\"\n", name)
			}
		}
	}
	return b.String()
}

// runtimes renders opts.RuntimeSnapshotters as CRI runtime handlers.
func (c *Containerd) runtimes(opts ContainerdOptions) string {
	names := make([]string, 0, len(opts.RuntimeSnapshotters))
	for n := range opts.RuntimeSnapshotters {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, `      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s]
        runtime_type = "io.containerd.runc.v2"
        snapshotter = %q
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s.options]
          BinaryName = "runc"
          SystemdCgroup = false
          Root = %q
`, n, opts.RuntimeSnapshotters[n], n, filepath.Join(c.Dir, "runc"))
	}
	return b.String()
}

// WriteHosts writes <HostsDir>/<host>/hosts.toml so that containerd reaches
// host over plain HTTP at server, trying the mirrors first (each an http URL,
// e.g. a Hermes cache registry, with capabilities pull and resolve).
func (c *Containerd) WriteHosts(t testing.TB, host, server string, mirrors ...string) {
	t.Helper()
	WriteHostsFile(t, c.HostsDir, host, server, mirrors...)
}

// WriteHostsFile writes a containerd hosts.toml for host into dir.
func WriteHostsFile(t testing.TB, dir, host, server string, mirrors ...string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "server = %q\n", server)
	for _, m := range mirrors {
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", m)
	}
	fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n", server)
	d := filepath.Join(dir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Ctr runs `ctr -a <socket> -n k8s.io args...` and returns its stdout.
func (c *Containerd) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, 5*time.Minute, c.ctr, append([]string{"-a", c.Socket, "-n", Namespace}, args...)...)
}

// CtrErr is Ctr that returns the error instead of failing the test.
func (c *Containerd) CtrErr(timeout time.Duration, args ...string) (string, error) {
	return RunErr(timeout, c.ctr, append([]string{"-a", c.Socket, "-n", Namespace}, args...)...)
}

// Client connects a Go client; it is closed when the test ends.
func (c *Containerd) Client(t testing.TB) *containerd.Client {
	t.Helper()
	cl, err := containerd.New(c.Socket, containerd.WithDefaultNamespace(Namespace))
	if err != nil {
		t.Fatalf("containerd client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Context returns a context in the test namespace, cancelled at test end.
func (c *Containerd) Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), Namespace))
	t.Cleanup(cancel)
	return ctx
}

// Resolver resolves image references through the hosts.toml directory, as
// containerd's own pulls do.
func (c *Containerd) Resolver() remotes.Resolver {
	return c.AuthResolver("", "")
}

// AuthResolver is Resolver logging in to every registry as user, as the
// CRI does with a Pod's pull secret.
func (c *Containerd) AuthResolver(user, password string) remotes.Resolver {
	ho := config.HostOptions{HostDir: config.HostDirFromRoot(c.HostsDir)}
	if user != "" {
		ho.Credentials = func(string) (string, string, error) { return user, password, nil }
	}
	return docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(context.Background(), ho)})
}

// killTasks kills and deletes every task and container, so no shim outlives
// the test.
func (c *Containerd) killTasks(t testing.TB) {
	if ok, _ := c.Exited(); ok {
		return
	}
	cl, err := containerd.New(c.Socket, containerd.WithDefaultNamespace(Namespace), containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Logf("containerd cleanup: %v", err)
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), Namespace), 30*time.Second)
	defer cancel()
	ctrs, err := cl.Containers(ctx)
	if err != nil {
		t.Logf("containerd cleanup: list containers: %v", err)
		return
	}
	for _, ctr := range ctrs {
		if task, err := ctr.Task(ctx, nil); err == nil {
			if st, err := task.Wait(ctx); err == nil {
				_ = task.Kill(ctx, syscall.SIGKILL)
				select {
				case <-st:
				case <-time.After(5 * time.Second):
				}
			}
			_, _ = task.Delete(ctx, containerd.WithProcessKill)
		}
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Logf("containerd cleanup: delete container %s: %v", ctr.ID(), err)
		}
	}
}

// sweep runs after containerd stopped: it kills shims of this instance and
// lazily unmounts anything left below Dir.
func (c *Containerd) sweep(t testing.TB) {
	c.Stop(10 * time.Second)
	out, _ := exec.Command("pgrep", "-f", "containerd-shim-runc-v2.*-address "+c.Socket).Output()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 0 {
			t.Logf("killing leftover shim %d", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	UnmountBelow(t, c.Dir)
}

// UnmountBelow lazily unmounts every mount point below dir, deepest first.
func UnmountBelow(t testing.TB, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mps = append(mps, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", mp, err)
		}
	}
}
