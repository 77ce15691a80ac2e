package snapshotter_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
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

// watcher is a container that, every round, hashes one file it has already
// read (page cache may serve it) and one it has not read yet (must come
// from the lazy mount), and prints what happened.
const watcherScript = `
i=0
for f in $(ls /data/random/*/* /data/random/* 2>/dev/null | sort); do [ -f "$f" ] && echo "$f"; done > /tmp/files
sha256sum /data/hello.txt >/dev/null && echo "round 0 warm ok"
while true; do
  i=$((i+1))
  f=$(sed -n "${i}p" /tmp/files)
  if [ -n "$f" ]; then
    if sha256sum "$f" >/dev/null 2>/tmp/err; then echo "round $i cold ok"; else echo "round $i cold FAIL: $(cat /tmp/err)"; fi
  fi
  if cat /data/hello.txt >/dev/null 2>/tmp/err; then echo "round $i warm ok"; else echo "round $i warm FAIL: $(cat /tmp/err)"; fi
  if ls /bin >/dev/null 2>/tmp/err; then echo "round $i ls ok"; else echo "round $i ls FAIL: $(cat /tmp/err)"; fi
  sleep 1
done
`

// startWatcher starts the watcher in img on snapshotter hermes and returns
// its output, a func describing the task's state, and a func that stops it.
func startWatcher(t *testing.T, n *node, img containerd.Image, id string) (*syncBuffer, func() string, func()) {
	t.Helper()
	client := n.ctrd.Client(t)
	ctx := n.ctrd.Context(t)
	ctr, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithSnapshotter(snName),
		containerd.WithNewSnapshot(id+"-rootfs", img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/bin/sh", "-c", watcherScript)))
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, out, out)))
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	state := func() string {
		st, err := task.Status(ctx)
		if err != nil {
			return "status: " + err.Error()
		}
		if st.Status == containerd.Stopped {
			return fmt.Sprintf("stopped, exit status %d", st.ExitStatus)
		}
		return string(st.Status)
	}
	stop := func() {
		c := context.WithoutCancel(ctx)
		_ = task.Kill(c, syscall.SIGKILL)
		_, _ = task.Delete(c, containerd.WithProcessKill)
		_ = ctr.Delete(c, containerd.WithSnapshotCleanup)
	}
	return out, state, stop
}

// waitRounds waits until the watcher printed round r, or 60 s.
func waitRounds(t *testing.T, out *syncBuffer, r int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), fmt.Sprintf("round %d ls", r)) {
		if time.Now().After(deadline) {
			t.Fatalf("watcher did not reach round %d:\n%s", r, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRestart restarts hermes-snapshotter (SIGTERM, then SIGKILL) while a
// container started from lazily mounted layers runs, and records what the
// container sees afterwards. What is asserted is what Hermes promises
// today: the snapshotter comes back, remounts the image's layers from its
// local store without the cache, and new containers of the image start.
// (Both restarts happen in one test function: a snapshotter restarted in a
// subtest would be stopped when the subtest ends.)
// Keeping running containers' mounts alive across a restart is a later
// issue; this test logs what they see.
func TestRestart(t *testing.T) {
	n := startNode(t, nodeOptions{})
	im := pushImage(t, n, "restart", lazySpec(100))
	p := buildIndex(t, n.cache.Host, im)
	img, _ := pull(t, n, im.ref, snName)
	want := len(indexedLayers(p))
	// The cache goes away: a restart must not need it.
	n.cache.Stop(10 * time.Second)

	var report strings.Builder
	for _, mode := range []struct {
		name  string
		crash bool
	}{{"SIGTERM", false}, {"SIGKILL", true}} {
		id := "watch-" + strings.ToLower(mode.name)
		out, state, stop := startWatcher(t, n, img, id)
		waitRounds(t, out, 2)
		mark := len(out.String())

		t0 := time.Now()
		n.restartSnapshotter(t, mode.crash)
		took := time.Since(t0)
		if m := fuseMounts(t, n.sn.Root); len(m) != want {
			t.Errorf("after the %s restart %d FUSE mounts, want %d (restored)", mode.name, len(m), want)
		}
		// Watch the running container for a few rounds.
		time.Sleep(5 * time.Second)
		seen := strings.TrimSpace(out.String()[mark:])
		fmt.Fprintf(&report, "\n%s restart (took %s): the running container is %s; it printed after the restart:\n  %s\n",
			mode.name, took.Round(time.Millisecond), state(), strings.ReplaceAll(seen, "\n", "\n  "))
		stop()

		// A new container of the same image starts on the restored mounts.
		args, wantOut := sumCommand(t, im, append([]string{"data/hello.txt"}, largestFiles(im, "data/random/", 1)...)...)
		if got := run(t, n, img, snName, "after-"+strings.ToLower(mode.name), args...); got != wantOut {
			t.Errorf("new container after the %s restart printed\n%s\nwant\n%s", mode.name, got, wantOut)
		}
	}
	t.Log(report.String())
}
