package snapshotter_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// du is what `du -sx` says the directory takes, in bytes (FUSE mounts
// below it are other filesystems and not counted).
func du(t *testing.T, dir string) int64 {
	t.Helper()
	out := harness.Run(t, time.Minute, "du", "-sxB1", dir)
	n, err := strconv.ParseInt(strings.Fields(out)[0], 10, 64)
	if err != nil {
		t.Fatalf("du %s: %q", dir, out)
	}
	return n
}

// waitFor polls cond every 200 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(200 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// spanCacheMax is the cap TestNodeDisk runs with: smaller than what one
// container of lazySpec reads, so that every idle layer is evicted.
const spanCacheMax = 4 << 20

// TestNodeDisk pulls and runs three images lazily with a small span cache,
// then removes them with ctr. The span cache evicts the spans of idle
// layers and a container reading them again gets the right bytes (fetched
// again); the layers without a zTOC are unpacked with an info line and no
// warning; after `ctr images rm --sync` the snapshotter's root is back to
// where it started.
func TestNodeDisk(t *testing.T) {
	n := startNode(t, nodeOptions{config: fmt.Sprintf("hermes.span_cache_max_bytes = %d\n", spanCacheMax)})
	start := du(t, n.sn.Root)

	type pulled struct {
		im   image
		args []string
		want string
	}
	var ims []pulled
	for i, name := range []string{"disk-a", "disk-b", "disk-c"} {
		spec := lazySpec(int64(300 + i))
		settings := everyLayer()
		if name == "disk-c" {
			// Default minimum layer size: busybox and the small files get no
			// zTOC and soci unpacks them.
			spec.Layers[1].Size = 12 << 20
			settings = builder.DefaultSettings()
		}
		im := pushImage(t, n, name, spec)
		buildIndexWith(t, n.cache.Host, im, settings)
		img, took := pull(t, n, im.ref, snName)
		args, want := sumCommand(t, im, append([]string{"data/hello.txt", "data/small.bin"}, largestFiles(im, "data/random/", 2)...)...)
		if out := run(t, n, img, snName, name, args...); out != want {
			t.Fatalf("%s: container printed\n%s\nwant\n%s", name, out, want)
		}
		t.Logf("%s: pulled in %s, ran", name, took.Round(time.Millisecond))
		ims = append(ims, pulled{im, args, want})
	}
	peak := du(t, n.sn.Root)

	t.Run("SpanCacheEvicts", func(t *testing.T) {
		const evictions = `hermes_snapshotter_span_evictions_total`
		if !waitFor(20*time.Second, func() bool { return metric(t, n.sn, evictions) > 0 }) {
			t.Fatalf("no eviction with the span cache capped at %d B (spans %v B)", spanCacheMax,
				metric(t, n.sn, `hermes_snapshotter_disk_bytes{kind="spans"}`))
		}
		// Every layer is idle: the janitor gets the cache within its cap.
		if !waitFor(20*time.Second, func() bool {
			return metric(t, n.sn, `hermes_snapshotter_disk_bytes{kind="spans"}`) <= spanCacheMax
		}) {
			t.Errorf("span cache %v B, cap %d B", metric(t, n.sn, `hermes_snapshotter_disk_bytes{kind="spans"}`), spanCacheMax)
		}
		// The first image again: right bytes, its spans fetched again.
		a := ims[0]
		img, err := n.ctrd.Client(t).GetImage(n.ctrd.Context(t), a.im.ref)
		if err != nil {
			t.Fatal(err)
		}
		from := len(n.origin.Output())
		if out := run(t, n, img, snName, "disk-a-again", a.args...); out != a.want {
			t.Fatalf("after eviction the container printed\n%s\nwant\n%s", out, a.want)
		}
		ranged, _, _, _ := blobBytes(accessLog(n.origin, from), layerDigests(t, a.im)[1])
		if ranged == 0 {
			t.Errorf("the evicted layer's spans were not fetched again")
		}
		t.Logf("%v layers evicted (%v B); after eviction the container read its files again, %d B fetched again",
			metric(t, n.sn, evictions), metric(t, n.sn, `hermes_snapshotter_span_evicted_bytes_total`), ranged)
	})

	t.Run("NoWarningForLayersWithoutZtoc", func(t *testing.T) {
		log := n.sn.Output()
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "level=WARN") && (strings.Contains(line, "no ztoc") || strings.Contains(line, "failed to prepare remote snapshot")) {
				t.Errorf("warning for an expected case: %s", line)
			}
		}
		// disk-c's small-files layer (its busybox layer is disk-a's, already
		// there).
		if c := strings.Count(log, "layer has no zTOC"); c != 1 {
			t.Errorf("%d info lines for layers without a zTOC, want 1", c)
		}
		if v := metric(t, n.sn, `hermes_snapshotter_layer_prepares_total{mode="soci_unpack"}`); v != 1 {
			t.Errorf("soci_unpack prepares = %v, want 1", v)
		}
	})

	t.Run("RemovedImagesGiveDiskBack", func(t *testing.T) {
		for _, p := range ims {
			// The CRI plugin also names each image by its ID (the config
			// digest), as the kubelet's image GC removes it.
			id, err := p.im.img.ConfigName()
			if err != nil {
				t.Fatal(err)
			}
			n.ctrd.Ctr(t, "images", "rm", "--sync", p.im.ref, id.String())
		}
		var end int64
		ok := waitFor(30*time.Second, func() bool {
			end = du(t, n.sn.Root)
			return end-start <= (peak-start)/20
		})
		t.Logf("snapshotter root: %d B at start, %d B with 3 images, %d B after removing them (%.1f%% of what they added left)",
			start, peak, end, 100*float64(end-start)/float64(peak-start))
		if !ok {
			t.Errorf("disk not reclaimed: %d B left of %d B added\n%s\nleases:\n%s\nsnapshots:\n%s\nimages:\n%s", end-start, peak-start,
				harness.Run(t, time.Minute, "sh", "-c", "du -axB1 "+n.sn.Root+" | sort -n | tail -15"),
				n.ctrd.Ctr(t, "leases", "ls"), n.ctrd.Ctr(t, "snapshots", "--snapshotter", snName, "ls"), n.ctrd.Ctr(t, "images", "ls"))
		}
		if m := fuseMounts(t, n.sn.Root); len(m) != 0 {
			t.Errorf("%d FUSE mounts left: %v", len(m), m)
		}
		for _, k := range []string{"spans", "content"} {
			sample := `hermes_snapshotter_disk_bytes{kind="` + k + `"}`
			// The gauge is measured at most every 2 s.
			if !waitFor(5*time.Second, func() bool { return metric(t, n.sn, sample) <= 64<<10 }) {
				t.Errorf("%s = %v after every image went", sample, metric(t, n.sn, sample))
			}
		}
		if v := metric(t, n.sn, `hermes_snapshotter_content_removed_blobs_total`); v == 0 {
			t.Errorf("no blob removed from the local store")
		}
	})
}

// TestCrashLeftovers kills the snapshotter (SIGKILL) while an image is
// being mounted, with spans cached and a half-written and a corrupt blob
// in its store. After the restart none of that is trusted: the old span
// cache and file-tree store are gone, the bad blobs removed, the mounted
// image's layers restored, and both images run with the right bytes.
func TestCrashLeftovers(t *testing.T) {
	n := startNode(t, nodeOptions{})
	x := pushImage(t, n, "crash-x", lazySpec(401))
	buildIndex(t, n.cache.Host, x)
	imgX, _ := pull(t, n, x.ref, snName)
	argsX, wantX := sumCommand(t, x, append([]string{"data/hello.txt"}, largestFiles(x, "data/random/", 2)...)...)
	if out := run(t, n, imgX, snName, "crash-x", argsX...); out != wantX {
		t.Fatalf("container printed\n%s\nwant\n%s", out, wantX)
	}

	// y has many small lazy layers, so that its pull is a series of mounts
	// and the kill lands between or inside them.
	specY := lazySpec(402)
	for i := range 8 {
		specY.Layers = append(specY.Layers, imagegen.Layer{Kind: imagegen.Random, Size: 1 << 20, Files: 2, Seed: int64(410 + i), Root: fmt.Sprintf("data/more%d", i)})
	}
	y := pushImage(t, n, "crash-y", specY)
	buildIndex(t, n.cache.Host, y)
	// Kill the snapshotter while containerd prepares y's layers.
	mark := strings.Count(n.sn.Output(), "preparing filesystem mount")
	pullErr := make(chan error, 1)
	go func() {
		client := n.ctrd.Client(t)
		ctx, cancel := context.WithTimeout(n.ctrd.Context(t), time.Minute)
		defer cancel()
		_, err := client.Pull(ctx, y.ref, pullOpts(n, y.ref)...)
		pullErr <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(n.sn.Output(), "preparing filesystem mount") <= mark {
		if time.Now().After(deadline) {
			t.Fatal("no mount of y began")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l := n.sn.Root
	oldSpans, _ := os.ReadDir(filepath.Join(l, "soci", "spancache"))
	var oldDB syscall.Stat_t
	_ = syscall.Stat(filepath.Join(l, "metadata.db"), &oldDB)
	n.sn.Kill()
	if err := <-pullErr; err == nil {
		t.Error("the pull of y completed before the kill: not a kill mid-pull")
	} else {
		t.Logf("killed mid-pull; the pull of y: %v", err)
	}
	if len(oldSpans) == 0 {
		t.Fatal("no span cache directory before the crash")
	}

	// What a write cut short leaves.
	blobs := filepath.Join(l, "content", "blobs", "sha256")
	corrupt := digest.FromString("a zTOC that was being written")
	must(t, os.WriteFile(filepath.Join(blobs, corrupt.Encoded()), []byte("a zTOC that was"), 0o600))
	must(t, os.MkdirAll(filepath.Join(l, "content", "ingest"), 0o700))
	must(t, os.WriteFile(filepath.Join(l, "content", "ingest", "sha256_half"), []byte("half"), 0o600))
	// A snapshot directory whose snapshot is gone (a removal cut short).
	orphan := filepath.Join(l, "snapshotter", "snapshots", "9999")
	must(t, os.MkdirAll(filepath.Join(orphan, "fs"), 0o700))
	must(t, os.WriteFile(filepath.Join(orphan, "fs", "left"), make([]byte, 64<<10), 0o600))

	o := n.snOpts
	o.Dir = n.sn.Dir
	n.sn = harness.StartHermesSnapshotter(t, o)

	for _, e := range oldSpans {
		if _, err := os.Stat(filepath.Join(l, "soci", "spancache", e.Name())); err == nil {
			t.Errorf("span cache directory %s of the killed process survived", e.Name())
		}
	}
	var newDB syscall.Stat_t
	if err := syscall.Stat(filepath.Join(l, "metadata.db"), &newDB); err == nil && oldDB.Ino != 0 && newDB.Ino == oldDB.Ino {
		t.Errorf("the killed process's file-tree store was opened again")
	}
	for _, p := range []string{filepath.Join(blobs, corrupt.Encoded()), filepath.Join(l, "content", "ingest", "sha256_half")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived the restart", p)
		}
	}
	// The janitor's first pass, a second after the start.
	if !waitFor(10*time.Second, func() bool { _, err := os.Stat(orphan); return err != nil }) {
		t.Errorf("orphaned snapshot directory %s survived", orphan)
	}
	if !strings.Contains(n.sn.Output(), "removed state an earlier run left") {
		t.Errorf("the snapshotter did not say what it removed")
	}
	if m := fuseMounts(t, n.sn.Root); len(m) < len(layerDigests(t, x)) {
		t.Errorf("%d FUSE mounts after the restart, want x's %d layers at least", len(m), len(layerDigests(t, x)))
	}

	// x runs from its restored layers, y pulls again and runs.
	if out := run(t, n, imgX, snName, "crash-x-after", argsX...); out != wantX {
		t.Errorf("x after the restart printed\n%s\nwant\n%s", out, wantX)
	}
	imgY, _ := pull(t, n, y.ref, snName)
	argsY, wantY := sumCommand(t, y, append([]string{"data/hello.txt", "data/small.bin"}, largestFiles(y, "data/random/", 2)...)...)
	if out := run(t, n, imgY, snName, "crash-y", argsY...); out != wantY {
		t.Errorf("y after the restart printed\n%s\nwant\n%s", out, wantY)
	}
	// Every lazily mounted layer is one FUSE mount: nothing stale left.
	layers := map[digest.Digest]bool{}
	for _, d := range append(layerDigests(t, x), layerDigests(t, y)...) {
		layers[d] = true
	}
	if m := fuseMounts(t, n.sn.Root); len(m) != len(layers) {
		t.Errorf("%d FUSE mounts, want %d (the layers of x and y): %v", len(m), len(layers), m)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
