package snapshotter_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	ctdsnapshotters "github.com/containerd/containerd/v2/pkg/snapshotters"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// syncBuffer is a bytes.Buffer safe for cio's copying goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// restartSpec is a small image (the watchers hash all of it every pass):
// busybox, a layer of random files and one of small files.
func restartSpec(seed int64) imagegen.Spec {
	return imagegen.Spec{Layers: []imagegen.Layer{
		{Kind: imagegen.Busybox},
		{Kind: imagegen.Random, Size: 3 << 20, Files: 6, Seed: seed, Root: "data/random"},
		{Kind: imagegen.Files, Entries: []imagegen.Entry{
			{Name: "data", Type: '5', Mode: imagegen.DefaultMode},
			{Name: "data/hello.txt", Content: []byte("hello from a lazily mounted layer\n"), Mode: 0o644},
			{Name: "data/small.bin", Size: 200 << 10, Fill: imagegen.FillRandom, Seed: seed, Mode: 0o644},
		}},
	}, Cmd: []string{"/bin/sh"}}
}

// watcherScript hashes every file of the image (FILES) in a loop and
// prints one line per pass: ok when every sum is WANT's, FAIL and why
// otherwise, with sha256sum's exit status (135: SIGBUS, a page of the
// mapped binary could not be read). It never exits by itself.
const watcherScript = `
i=0
while true; do
  i=$((i+1))
  got=$(/bin/sha256sum $FILES 2>/tmp/err); rc=$?
  if [ "$got" = "$WANT" ]; then echo "pass $i ok"; else echo "pass $i FAIL: rc=$rc $(cat /tmp/err)"; fi
  sleep 0.3 2>/dev/null || sleep 1
done
`

// allFiles is every regular file of the image, and the sums sha256sum
// prints for them.
func allFiles(im image) (files, want string) {
	var ps []string
	for p, fi := range im.tree {
		if fi.Type == '0' && (strings.HasPrefix(p, "data/") || p == "bin/busybox") {
			ps = append(ps, p)
		}
	}
	sort.Strings(ps)
	var f, w []string
	for _, p := range ps {
		f = append(f, "/"+p)
		w = append(w, fmt.Sprintf("%s  /%s", im.tree[p].SHA256, p))
	}
	return strings.Join(f, " "), strings.Join(w, "\n")
}

// watcher is a running container of watcherScript.
type watcher struct {
	id    string
	out   *syncBuffer
	task  containerd.Task
	state func() string
	stop  func() error
}

func startWatcher(t *testing.T, n *node, img containerd.Image, im image, id string) *watcher {
	t.Helper()
	client := n.ctrd.Client(t)
	ctx := n.ctrd.Context(t)
	files, want := allFiles(im)
	ctr, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithSnapshotter(snName),
		containerd.WithNewSnapshot(id+"-rootfs", img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/bin/sh", "-c", watcherScript),
			oci.WithEnv([]string{"FILES=" + files, "WANT=" + want})))
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{id: id, out: &syncBuffer{}}
	if w.task, err = ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, w.out, w.out))); err != nil {
		t.Fatal(err)
	}
	if err := w.task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	w.state = func() string {
		st, err := w.task.Status(ctx)
		if err != nil {
			return "status: " + err.Error()
		}
		if st.Status == containerd.Stopped {
			return fmt.Sprintf("stopped, exit status %d", st.ExitStatus)
		}
		return string(st.Status)
	}
	stopped := false
	w.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = w.task.Kill(c, syscall.SIGKILL)
		if _, err := w.task.Delete(c, containerd.WithProcessKill); err != nil {
			return err
		}
		return ctr.Delete(c, containerd.WithSnapshotCleanup)
	}
	t.Cleanup(func() { _ = w.stop() })
	return w
}

// passes counts the watcher's ok and FAIL lines.
func (w *watcher) passes() (ok, failed int, fails []string) {
	for _, l := range strings.Split(w.out.String(), "\n") {
		switch {
		case strings.HasSuffix(l, " ok"):
			ok++
		case strings.Contains(l, "FAIL"):
			failed++
			fails = append(fails, l)
		}
	}
	return ok, failed, fails
}

// waitPasses waits until every watcher printed more ok passes than it had.
func waitPasses(t *testing.T, ws []*watcher, more int, timeout time.Duration) {
	t.Helper()
	base := make([]int, len(ws))
	for i, w := range ws {
		base[i], _, _ = w.passes()
	}
	deadline := time.Now().Add(timeout)
	for i, w := range ws {
		for {
			ok, _, _ := w.passes()
			if ok >= base[i]+more {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("watcher %s: %d passes in %s (container %s):\n%s", w.id, ok-base[i], timeout, w.state(), tail(w.out.String(), 10))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// evict drops the page cache of every file of the lazy mounts below root,
// so that the containers' next reads are FUSE requests (pages mapped by a
// process, like busybox's, stay).
func evict(t *testing.T, root string) {
	t.Helper()
	for _, mp := range fuseMounts(t, root) {
		_ = filepath.WalkDir(mp, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if f, err := os.Open(p); err == nil {
				_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
				f.Close()
			}
			return nil
		})
	}
}

// fuseFDs counts a process's open /dev/fuse descriptors.
func fuseFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && l == "/dev/fuse" {
			n++
		}
	}
	return n
}

func openFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// buildReplacement builds hermes-snapshotter again into a binary of its
// own (another build ID), for a restart onto a replaced binary.
func buildReplacement(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(harness.TempDir(t, "next-bin"), "hermes-snapshotter")
	cmd := exec.Command("go", "build", "-ldflags=-buildid=hermes-restart-test-next", "-o", out, "./snapshotter/cmd/hermes-snapshotter")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// restartWithGap stops hermes-snapshotter, waits gap (the running
// containers' reads wait in the kernel meanwhile), and starts bin on the
// same root.
func (n *node) restartWithGap(t *testing.T, crash bool, gap time.Duration, bin string) {
	t.Helper()
	n.sn.End(crash, 30*time.Second)
	time.Sleep(gap)
	o := n.snOpts
	o.Dir = n.sn.Dir
	o.Binary = bin
	n.sn = harness.StartHermesSnapshotter(t, o)
}

// TestRestart restarts hermes-snapshotter three times each with SIGTERM,
// with SIGKILL, and onto a newly built binary, each time with a 1 s gap
// in which the page cache of the lazy mounts has been dropped, while ten
// containers started from lazily mounted layers hash every file of their
// image in a loop. No read may fail, every sum must be right, no
// container may exit, the mounts are served by each new process (no
// duplicates, nothing parked left), the holder keeps exactly one
// connection per mount, and new containers of the same and of a new image
// start lazily afterwards. At the end, removing the snapshots
// leaves no mount and no held connection.
func TestRestart(t *testing.T) {
	n := startNode(t, nodeOptions{})
	im := pushImage(t, n, "restart", restartSpec(100))
	p := buildIndex(t, n.cache.Host, im)
	img, _ := pull(t, n, im.ref, snName)
	want := len(indexedLayers(p))
	next := buildReplacement(t)
	first := harness.HermesBin(t, "hermes-snapshotter")

	var ws []*watcher
	for i := range 10 {
		ws = append(ws, startWatcher(t, n, img, im, fmt.Sprintf("watch-%d", i)))
	}
	waitPasses(t, ws, 1, 60*time.Second)
	holder := harness.HolderPID(n.sn.Root)
	if holder == 0 {
		t.Fatal("no FUSE session holder runs")
	}

	var report strings.Builder
	var fds0, gor0, waited float64
	i := 0
	for _, mode := range []string{"SIGTERM", "SIGKILL", "replaced"} {
		for round := 1; round <= 3; round++ {
			i++
			bin := first
			if mode == "replaced" && round%2 == 1 {
				bin = next
			}
			evict(t, n.sn.Root)
			t0 := time.Now()
			n.restartWithGap(t, mode == "SIGKILL", time.Second, bin)
			back := time.Since(t0)
			waitPasses(t, ws, 2, 60*time.Second)
			if m := fuseMounts(t, n.sn.Dir); len(m) != want {
				t.Errorf("after %s restart %d: %d FUSE mounts below the snapshotter's directory, want %d:\n%s", mode, round, len(m), want, strings.Join(m, "\n"))
			}
			if got := metric(t, n.sn, "hermes_snapshotter_mounts_restored_total"); int(got) != want {
				t.Errorf("after %s restart %d: %v mounts restored, want %d", mode, round, got, want)
			}
			if h := harness.HolderPID(n.sn.Root); h != holder {
				t.Errorf("after %s restart %d: holder %d, want the same holder %d", mode, round, h, holder)
			} else if got := fuseFDs(holder); got != want {
				t.Errorf("after %s restart %d: the holder keeps %d connections, want %d", mode, round, got, want)
			}
			fds, gor := float64(openFDs(n.sn.PID())), metric(t, n.sn, "go_goroutines")
			if i == 1 {
				fds0, gor0 = fds, gor
			} else if fds > fds0+10 || gor > gor0*1.5+20 {
				t.Errorf("after %s restart %d: %v open fds and %v goroutines, after the first restart %v and %v", mode, round, fds, gor, fds0, gor0)
			}
			w := metric(t, n.sn, "hermes_snapshotter_restart_waited_requests_total")
			waited += w
			fmt.Fprintf(&report, "%s restart %d: back after %s (1 s gap), %v requests had waited\n", mode, round,
				back.Round(time.Millisecond), w)
		}
	}
	for _, w := range ws {
		ok, failed, fails := w.passes()
		if failed > 0 {
			t.Errorf("watcher %s: %d of %d passes failed:\n%s", w.id, failed, ok+failed, strings.Join(fails[:min(len(fails), 5)], "\n"))
		}
		if st := w.state(); st != string(containerd.Running) {
			t.Errorf("watcher %s is %s", w.id, st)
		}
	}
	t.Log(report.String())
	if waited == 0 {
		t.Error("no request waited for a restarted snapshotter: the gaps did not test what they should")
	}
	if !strings.Contains(n.sn.Output(), "serving lazily mounted layers of the previous process again") {
		t.Error("the snapshotter did not log that it took the mounts over")
	}

	// A new container of the same image, and a new image, start lazily.
	waitReconnected(t, n)
	args, wantOut := sumCommand(t, im, "data/hello.txt", "data/small.bin")
	if got := run(t, n, img, snName, "after-same", args...); got != wantOut {
		t.Errorf("new container of the same image printed\n%s\nwant\n%s", got, wantOut)
	}
	im2 := pushImage(t, n, "restart-new", restartSpec(200))
	p2 := buildIndex(t, n.cache.Host, im2)
	mark := len(n.origin.Output())
	img2, _ := pull(t, n, im2.ref, snName)
	args, wantOut = sumCommand(t, im2, largestFiles(im2, "data/random/", 1)...)
	if got := run(t, n, img2, snName, "after-new", args...); got != wantOut {
		t.Errorf("container of a new image printed\n%s\nwant\n%s", got, wantOut)
	}
	reqs := accessLog(n.origin, mark)
	for d := range indexedLayers(p2) {
		if _, whole, _, wholeReqs := blobBytes(reqs, d); wholeReqs > 0 {
			t.Errorf("new image after the restarts: layer %s downloaded whole (%d bytes): not lazy", d, whole)
		}
	}
	layers := indexedLayers(p)
	for d := range indexedLayers(p2) {
		layers[d] = true // the images share busybox's layer
	}
	if m := fuseMounts(t, n.sn.Dir); len(m) != len(layers) {
		t.Errorf("%d FUSE mounts with both images, want %d", len(m), len(layers))
	}

	// Removing every snapshot leaves no mount and no held connection.
	for _, w := range ws {
		if err := w.stop(); err != nil {
			t.Errorf("stopping watcher %s: %v", w.id, err)
		}
	}
	removeAllSnapshots(t, n.sn.Socket)
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, held := fuseMounts(t, n.sn.Dir), fuseFDs(holder)
		if len(m) == 0 && held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after removing the snapshots: %d FUSE mounts, %d held connections:\n%s", len(m), held, strings.Join(m, "\n"))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// removeAllSnapshots removes every snapshot straight at the snapshotter
// (containerd's own removal waits for its garbage collector), children
// first, then lets it clean up.
func removeAllSnapshots(t *testing.T, socket string) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), snName)
	ctx := namespaces.WithNamespace(context.Background(), harness.Namespace)
	for range 20 {
		var keys []string
		if err := sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error { keys = append(keys, i.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
			break
		}
		for _, k := range keys {
			_ = sn.Remove(ctx, k) // a parent refuses until its children are gone
		}
	}
	if c, ok := sn.(snapshots.Cleaner); ok {
		if err := c.Cleanup(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

// TestRestartTimeout keeps hermes-snapshotter down past [hermes]
// restart_timeout: the running container's reads fail with EIO instead of
// hanging, the holder's log says why, the container can be stopped, and a
// snapshotter started afterwards serves the mounts again.
func TestRestartTimeout(t *testing.T) {
	n := startNode(t, nodeOptions{config: `hermes.restart_timeout = "2s"`})
	im := pushImage(t, n, "restart-timeout", restartSpec(300))
	buildIndex(t, n.cache.Host, im)
	img, _ := pull(t, n, im.ref, snName)
	w := startWatcher(t, n, img, im, "watch-timeout")
	waitPasses(t, []*watcher{w}, 1, 60*time.Second)

	evict(t, n.sn.Root)
	n.sn.Kill()
	t0 := time.Now()
	for {
		_, failed, _ := w.passes()
		if failed > 0 || w.state() != string(containerd.Running) {
			break
		}
		if time.Since(t0) > 30*time.Second {
			t.Fatalf("reads neither failed nor completed 30 s after the snapshotter went away (restart_timeout 2s):\n%s", tail(w.out.String(), 5))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := time.Since(t0); d < 2*time.Second {
		t.Errorf("reads failed %s after the snapshotter went away, before restart_timeout (2s)", d)
	}
	_, _, fails := w.passes()
	t.Logf("after %s the container is %s; it printed %q", time.Since(t0).Round(time.Millisecond), w.state(), fails)
	logb, _ := os.ReadFile(filepath.Join(n.sn.Root, "fusesession", "holder.log"))
	if !strings.Contains(string(logb), "did not come back within the restart timeout") {
		t.Errorf("the holder's log does not say why reads fail:\n%s", logb)
	}
	t1 := time.Now()
	if err := w.stop(); err != nil {
		t.Errorf("stopping the container: %v", err)
	}
	t.Logf("container stopped in %s", time.Since(t1).Round(time.Millisecond))

	// A snapshotter started later serves the mounts again.
	o := n.snOpts
	o.Dir = n.sn.Dir
	n.sn = harness.StartHermesSnapshotter(t, o)
	waitReconnected(t, n)
	args, want := sumCommand(t, im, largestFiles(im, "data/random/", 2)...)
	if got := run(t, n, img, snName, "after-timeout", args...); got != want {
		t.Errorf("new container printed\n%s\nwant\n%s", got, want)
	}
}

// TestRestartMidMount kills hermes-snapshotter with SIGKILL while it
// mounts an image's layers, and starts it again: what it had mounted is
// served again or cleanly replaced, nothing stale is left (no parked or
// duplicate mount, one held connection per mount), and the image pulls
// and runs with the right bytes.
func TestRestartMidMount(t *testing.T) {
	n := startNode(t, nodeOptions{})
	im := pushImage(t, n, "restart-midmount", restartSpec(400))
	p := buildIndex(t, n.cache.Host, im)
	want := len(indexedLayers(p))

	client := n.ctrd.Client(t)
	ctx := n.ctrd.Context(t)
	pulled := make(chan error, 1)
	go func() {
		_, err := client.Pull(ctx, im.ref, containerd.WithPullUnpack, containerd.WithPullSnapshotter(snName),
			containerd.WithResolver(n.ctrd.AuthResolver(n.user, n.password)),
			containerd.WithImageHandlerWrapper(ctdsnapshotters.AppendInfoHandlerWrapper(im.ref)))
		pulled <- err
	}()
	deadline := time.Now().Add(60 * time.Second)
	for len(fuseMounts(t, n.sn.Root)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no layer was mounted")
		}
		time.Sleep(time.Millisecond)
	}
	n.sn.Kill()
	killedAt := len(fuseMounts(t, n.sn.Root))
	err := <-pulled
	t.Logf("killed with %d of %d layers mounted; the pull returned %v", killedAt, want, err)

	o := n.snOpts
	o.Dir = n.sn.Dir
	n.sn = harness.StartHermesSnapshotter(t, o)
	waitReconnected(t, n)
	img, _ := pull(t, n, im.ref, snName)
	files, _ := allFiles(im)
	var paths []string
	for _, f := range strings.Fields(files) {
		paths = append(paths, strings.TrimPrefix(f, "/"))
	}
	args, wantOut := sumCommand(t, im, paths...)
	if got := run(t, n, img, snName, "after-midmount", args...); got != wantOut {
		t.Errorf("container after the crash printed\n%s\nwant\n%s", got, wantOut)
	}
	if m := fuseMounts(t, n.sn.Dir); len(m) != want {
		t.Errorf("%d FUSE mounts below the snapshotter's directory, want %d:\n%s", len(m), want, strings.Join(m, "\n"))
	}
	if got := fuseFDs(harness.HolderPID(n.sn.Root)); got != want {
		t.Errorf("the holder keeps %d connections, want %d", got, want)
	}
	if ents, _ := os.ReadDir(filepath.Join(n.sn.Root, "fusesession", "park")); len(ents) > 0 {
		t.Errorf("%d parked mounts left", len(ents))
	}
}

// waitReconnected waits until containerd reaches the snapshotter again:
// after a long gap its connection to the proxy snapshotter is in gRPC's
// reconnect backoff for a few seconds (the kubelet retries meanwhile).
func waitReconnected(t *testing.T, n *node) {
	t.Helper()
	sn := n.ctrd.Client(t).SnapshotService(snName)
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := sn.Walk(n.ctrd.Context(t), func(context.Context, snapshots.Info) error { return nil })
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd does not reach the restarted snapshotter: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
