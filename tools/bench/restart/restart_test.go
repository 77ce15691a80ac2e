// Package restart benchmarks restarts of hermes-snapshotter under running
// containers:
//
//   - stall: a container runs on a lazily mounted image while eight
//     readers read random 4 KiB blocks of the image's files through the
//     layer's FUSE mount, dropping the block from the page cache first
//     (every read is a FUSE request, as a container's cold reads are); the snapshotter is restarted
//     (HERMES_BENCH_REPS times each with SIGTERM and SIGKILL, no pause in
//     between, as systemd's Restart= does). Per restart: the longest any
//     read took; over all reads issued from the stop until 1 s after the
//     snapshotter is back: p50, p99 and the longest.
//   - restore: N lazily mounted layers (N = 10, 100: images of ten
//     layers) and the time the restarted snapshotter takes to serve all
//     of them again (its hermes_snapshotter_restore_seconds), and from the
//     stop until it answers /healthz.
//
// Goals (issue 13): p99 stall ≤ 1 s for a SIGTERM restart; 100 mounts
// restored in ≤ 2 s.
//
//	cd tools && go test -run '^$' -bench Restart -benchtime 1x ./bench/restart
//
// Results: $HERMES_BENCH_OUT/restart.json and restart.txt.
package restart

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	ctdsnapshotters "github.com/containerd/containerd/v2/pkg/snapshotters"
	"golang.org/x/sys/unix"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

type stallRow struct {
	Kind       string  `json:"kind"`
	Restarts   int     `json:"restarts"`
	Reads      int     `json:"reads_in_window"`
	P50Sec     float64 `json:"read_p50_seconds"`
	P99Sec     float64 `json:"read_p99_seconds"`
	MaxSec     float64 `json:"read_max_seconds"`
	Longest50  float64 `json:"longest_stall_p50_seconds"`
	Longest99  float64 `json:"longest_stall_p99_seconds"`
	DownMedian float64 `json:"stop_to_healthy_median_seconds"`
}

type restoreRow struct {
	Mounts        int     `json:"mounts"`
	Restarts      int     `json:"restarts"`
	RestoreMedian float64 `json:"restore_median_seconds"`
	RestoreMax    float64 `json:"restore_max_seconds"`
	DownMedian    float64 `json:"stop_to_healthy_median_seconds"`
}

type node struct {
	origin *harness.Registry
	cache  *harness.HermesRegistry
	sn     *harness.HermesSnapshotter
	snOpts harness.SnapshotterOptions
	ctrd   *harness.Containerd
}

func startNode(b *testing.B) *node {
	n := &node{origin: harness.StartRegistry(b, harness.RegistryOptions{}), cache: harness.StartHermesRegistry(b, harness.HermesRegistryOptions{})}
	hostsDir := filepath.Join(harness.TempDir(b, "hosts"), "certs.d")
	harness.WriteHostsFile(b, hostsDir, n.origin.Host, n.origin.URL)
	n.snOpts = harness.SnapshotterOptions{CacheURL: n.cache.URL, HostsDir: hostsDir, LogLevel: "info"}
	n.sn = harness.StartHermesSnapshotter(b, n.snOpts)
	n.ctrd = harness.StartContainerd(b, harness.ContainerdOptions{ProxySnapshotters: map[string]string{"hermes": n.sn.Socket},
		HostsDir: hostsDir, ProxyAnnotations: true})
	n.sn.LinkContainerd(b, n.ctrd.Socket)
	return n
}

// image pushes spec, indexes every layer into the cache and pulls it lazily.
func (n *node) image(b *testing.B, name string, spec imagegen.Spec) containerd.Image {
	ctx := context.Background()
	img, err := imagegen.Image(spec)
	if err != nil {
		b.Fatal(err)
	}
	ref := n.origin.Host + "/bench/" + name + ":1"
	if _, err := imagegen.Push(ctx, ref, img); err != nil {
		b.Fatal(err)
	}
	bld, err := builder.New(builder.Config{CacheHost: n.cache.Host, TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	settings := builder.DefaultSettings()
	settings.MinLayerSize = 0
	if _, err := bld.Build(ctx, builder.Request{Image: ref, Settings: settings}); err != nil {
		b.Fatal(err)
	}
	client := n.ctrd.Client(b)
	im, err := client.Pull(n.ctrd.Context(b), ref, containerd.WithPullUnpack, containerd.WithPullSnapshotter("hermes"),
		containerd.WithResolver(n.ctrd.Resolver()), containerd.WithImageHandlerWrapper(ctdsnapshotters.AppendInfoHandlerWrapper(ref)))
	if err != nil {
		b.Fatal(err)
	}
	return im
}

// restart stops the snapshotter and starts it again at once; it returns
// when it answers /healthz, and how long that took from the stop.
func (n *node) restart(b *testing.B, crash bool) time.Duration {
	t0 := time.Now()
	n.sn.End(crash, 30*time.Second)
	o := n.snOpts
	o.Dir = n.sn.Dir
	n.sn = harness.StartHermesSnapshotter(b, o)
	return time.Since(t0)
}

func (n *node) metric(b *testing.B, name string) float64 {
	resp, err := http.Get(n.sn.MetricsURL + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	b.Fatalf("no metric %s", name)
	return 0
}

func fuseMounts(root string) []string {
	raw, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		for i := 6; i < len(f)-1; i++ {
			if f[i] == "-" {
				if strings.HasPrefix(f[i+1], "fuse") && strings.HasPrefix(f[4], root+"/") && !strings.Contains(f[4], "/park/") {
					out = append(out, f[4])
				}
				break
			}
		}
	}
	return out
}

// read is one timed read.
type read struct {
	start time.Time
	took  time.Duration
}

// readers read random aligned 4 KiB blocks of files, each dropped from
// the page cache first, until stop is closed.
func readers(b *testing.B, files []string, stop chan struct{}) (*[]read, *sync.Mutex, *sync.WaitGroup) {
	var mu sync.Mutex
	var reads []read
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			mem := make([]byte, 4096)
			var err error
			fds := map[string]int{}
			defer func() {
				for _, fd := range fds {
					syscall.Close(fd)
				}
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				f := files[r.IntN(len(files))]
				fd, ok := fds[f]
				if !ok {
					if fd, err = syscall.Open(f, syscall.O_RDONLY, 0); err != nil {
						b.Errorf("open %s: %v", f, err)
						return
					}
					fds[f] = fd
				}
				var st syscall.Stat_t
				_ = syscall.Fstat(fd, &st)
				off := r.Int64N(max(st.Size/4096, 1)) * 4096
				_ = unix.Fadvise(fd, off, 4096, unix.FADV_DONTNEED)
				t0 := time.Now()
				_, err := syscall.Pread(fd, mem, off)
				took := time.Since(t0)
				if err != nil {
					b.Errorf("read %s at %d: %v", f, off, err)
					return
				}
				mu.Lock()
				reads = append(reads, read{t0, took})
				mu.Unlock()
			}
		}()
	}
	return &reads, &mu, &wg
}

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

func BenchmarkRestart(b *testing.B) {
	harness.RequireRoot(b)
	harness.RequireFUSE(b)
	reps, _ := strconv.Atoi(envOr("HERMES_BENCH_REPS", "5"))
	n := startNode(b)

	// Stall.
	img := n.image(b, "stall", imagegen.Spec{Layers: []imagegen.Layer{
		{Kind: imagegen.Busybox},
		{Kind: imagegen.Random, Size: 16 << 20, Files: 8, Seed: 1, Root: "data"},
	}, Cmd: []string{"/bin/sh"}})
	runContainer(b, n, img, "running", "while true; do cat /data/* >/dev/null; sleep 1; done")
	var files []string
	for _, mp := range fuseMounts(n.sn.Root) {
		_ = filepath.WalkDir(filepath.Join(mp, "data"), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				files = append(files, p)
			}
			return nil
		})
	}
	if len(files) == 0 {
		b.Fatal("no lazily mounted file to read")
	}
	var stalls []stallRow
	for _, kind := range []string{"SIGTERM", "SIGKILL"} {
		stop := make(chan struct{})
		reads, mu, wg := readers(b, files, stop)
		time.Sleep(time.Second)
		var longest, downs, window []float64
		for range reps {
			t0 := time.Now()
			d := n.restart(b, kind == "SIGKILL")
			downs = append(downs, d.Seconds())
			time.Sleep(time.Second)
			end := time.Now()
			mu.Lock()
			worst := 0.0
			for _, r := range *reads {
				if r.start.After(t0.Add(-time.Second)) && r.start.Before(end) {
					window = append(window, r.took.Seconds())
					worst = max(worst, r.took.Seconds())
				}
			}
			mu.Unlock()
			longest = append(longest, worst)
			b.Logf("%s restart: back (healthy) after %s; longest read %.3fs", kind, d.Round(time.Millisecond), worst)
			time.Sleep(500 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		stalls = append(stalls, stallRow{Kind: kind, Restarts: reps, Reads: len(window), P50Sec: pct(window, 50), P99Sec: pct(window, 99),
			MaxSec: pct(window, 100), Longest50: pct(longest, 50), Longest99: pct(longest, 99), DownMedian: pct(downs, 50)})
	}

	// Restore.
	var restores []restoreRow
	images := 0
	for _, want := range []int{10, 100} {
		for images*10 < want {
			var layers []imagegen.Layer
			for l := range 10 {
				layers = append(layers, imagegen.Layer{Kind: imagegen.Random, Size: 64 << 10, Files: 1, Seed: int64(1000 + images*10 + l),
					Root: fmt.Sprintf("l%d", l)})
			}
			n.image(b, fmt.Sprintf("many%d", images), imagegen.Spec{Layers: layers})
			images++
		}
		mounts := len(fuseMounts(n.sn.Root))
		var rs, downs []float64
		for range reps {
			d := n.restart(b, false)
			r := n.metric(b, "hermes_snapshotter_restore_seconds")
			if got := n.metric(b, "hermes_snapshotter_mounts_restored_total"); int(got) != mounts {
				b.Errorf("%v mounts restored, want %d", got, mounts)
			}
			rs, downs = append(rs, r), append(downs, d.Seconds())
		}
		restores = append(restores, restoreRow{Mounts: mounts, Restarts: reps, RestoreMedian: pct(rs, 50), RestoreMax: pct(rs, 100), DownMedian: pct(downs, 50)})
	}

	var t strings.Builder
	fmt.Fprintf(&t, "hermes-snapshotter restarts under a running container (%d restarts each; 8 readers, uncached 4 KiB reads)\n\n", reps)
	fmt.Fprintf(&t, "%-8s %8s %9s %9s %9s %12s %12s %10s\n", "kind", "reads", "p50", "p99", "max", "longest p50", "longest p99", "down p50")
	for _, s := range stalls {
		fmt.Fprintf(&t, "%-8s %8d %8.3fs %8.3fs %8.3fs %11.3fs %11.3fs %9.3fs\n", s.Kind, s.Reads, s.P50Sec, s.P99Sec, s.MaxSec, s.Longest50, s.Longest99, s.DownMedian)
	}
	fmt.Fprintf(&t, "\n%-8s %14s %12s %10s\n", "mounts", "restore p50", "restore max", "down p50")
	for _, r := range restores {
		fmt.Fprintf(&t, "%-8d %13.3fs %11.3fs %9.3fs\n", r.Mounts, r.RestoreMedian, r.RestoreMax, r.DownMedian)
	}
	fmt.Fprintf(&t, "\nreads: those issued from 1 s before the stop until 1 s after the snapshotter answered /healthz; longest: the longest read per restart; down: stop until /healthz\n")
	harness.WriteBench(b, "restart", map[string]any{"stall": stalls, "restore": restores}, t.String())
}

func runContainer(b *testing.B, n *node, img containerd.Image, id, script string) {
	client := n.ctrd.Client(b)
	ctx := n.ctrd.Context(b)
	ctr, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithSnapshotter("hermes"),
		containerd.WithNewSnapshot(id+"-rootfs", img), containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/bin/sh", "-c", script)))
	if err != nil {
		b.Fatal(err)
	}
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		b.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c := context.WithoutCancel(ctx)
		_, _ = task.Delete(c, containerd.WithProcessKill)
		_ = ctr.Delete(c, containerd.WithSnapshotCleanup)
	})
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}
