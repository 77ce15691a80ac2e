// Package lazy benchmarks container start over a slow link: time from the
// pull's start to the container's ready line, and bytes taken from the
// origin registry, for two kinds of ≥1 GB image whose workload reads a few
// percent of it, in four modes:
//
//   - overlayfs: containerd's normal pull and unpack;
//   - hermes: hermes-snapshotter with the index in the Hermes cache
//     (in-cluster, unshaped), layer spans from the origin;
//   - soci: the same binary with the cache disabled and upstream discovery
//     on, the index pushed next to the image at the origin (what upstream
//     soci-snapshotter does);
//   - limit: the physical limit, the container started from a warm local
//     image plus the bytes the workload reads ÷ the link bandwidth.
//
// The origin's responses go through tc htb on lo (HERMES_BENCH_BANDWIDTH,
// default 100mbit). Every timed run gets a fresh containerd and snapshotter.
//
//	cd tools && go test -run '^$' -bench Lazy -benchtime 1x -timeout 120m ./bench/lazy
//
// Settings (environment): HERMES_BENCH_BANDWIDTH, HERMES_BENCH_REPS (default
// 3), HERMES_BENCH_LAZY_SCALE (image size factor, default 1; 0.05 gives a
// quick run whose numbers mean little), HERMES_BENCH_LAZY_IMAGES ("R,C"),
// HERMES_BENCH_LAZY_MODES ("overlayfs,hermes,soci"; limit comes with
// overlayfs), HERMES_BENCH_SPAN_SIZE (bytes; default the builder's).
// Results: $HERMES_BENCH_OUT/lazy.json and lazy.txt (default <repo>/.bench).
package lazy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	ctdsnapshotters "github.com/containerd/containerd/v2/pkg/snapshotters"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/registry/names"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

type run struct {
	Image       string  `json:"image"`
	Mode        string  `json:"mode"`
	Rep         int     `json:"rep"`
	ReadySec    float64 `json:"ready_seconds"`
	PullSec     float64 `json:"pull_seconds"`
	OriginBytes int64   `json:"origin_bytes"`
}

type summary struct {
	Image         string  `json:"image"`
	ImageBytes    int64   `json:"image_bytes"`
	WorkloadBytes int64   `json:"workload_bytes"`
	WorkloadFiles int     `json:"workload_files"`
	ZtocBytes     int64   `json:"ztoc_bytes"`
	SpanBytes     int64   `json:"span_bytes"` // the spans the workload touches, plus layers without zTOC
	Mode          string  `json:"mode"`
	MedianSec     float64 `json:"median_ready_seconds"`
	MedianBytes   int64   `json:"median_origin_bytes"`
}

type benchImage struct {
	name      string
	spec      imagegen.Spec
	ref       string
	size      int64    // compressed bytes of all layers
	files     []string // what the workload reads
	readBytes int64
	ztocBytes int64
	spanBytes int64 // compressed bytes of the spans the workload touches, plus layers without zTOC
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func BenchmarkLazyStart(b *testing.B) {
	harness.RequireRoot(b)
	harness.RequireFUSE(b)
	bandwidth := env("HERMES_BENCH_BANDWIDTH", "100mbit")
	bps, err := bitsPerSecond(bandwidth)
	if err != nil {
		b.Fatal(err)
	}
	reps, _ := strconv.Atoi(env("HERMES_BENCH_REPS", "3"))
	scale, _ := strconv.ParseFloat(env("HERMES_BENCH_LAZY_SCALE", "1"), 64)
	if reps < 1 || scale <= 0 {
		b.Fatalf("HERMES_BENCH_REPS=%d and HERMES_BENCH_LAZY_SCALE=%v must be positive", reps, scale)
	}

	origin := harness.StartRegistry(b, harness.RegistryOptions{})
	cache := harness.StartHermesRegistry(b, harness.HermesRegistryOptions{})
	var images []*benchImage
	for _, kind := range strings.Split(env("HERMES_BENCH_LAZY_IMAGES", "R,C"), ",") {
		var spec imagegen.Spec
		switch strings.TrimSpace(kind) {
		case "R":
			spec = imagegen.PresetRandom(imagegen.BenchRandomLayers, int64(float64(imagegen.BenchRandomLayerSize)*scale))
		case "C":
			spec = imagegen.PresetCompressible(imagegen.BenchCompressibleLayers, int64(float64(imagegen.BenchCompressibleSize)*scale),
				max(int(float64(imagegen.BenchCompressibleFiles)*scale), 100))
		default:
			b.Fatalf("HERMES_BENCH_LAZY_IMAGES: unknown image kind %q (R, C)", kind)
		}
		images = append(images, prepare(b, origin, cache, kind, spec, scale))
	}

	// Only now is the origin slowed: pushing and indexing are not measured.
	port, _ := strconv.Atoi(origin.Host[strings.LastIndex(origin.Host, ":")+1:])
	harness.ShapePort(b, port, bandwidth)

	var runs []run
	var mu sync.Mutex
	record := func(r run) {
		mu.Lock()
		defer mu.Unlock()
		runs = append(runs, r)
		b.Logf("%s %-9s rep %d: ready in %6.2fs (pull %.2fs), %s from the origin", r.Image, r.Mode, r.Rep, r.ReadySec, r.PullSec, human(r.OriginBytes))
	}
	for _, im := range images {
		for rep := 1; rep <= reps; rep++ {
			for _, mode := range strings.Split(env("HERMES_BENCH_LAZY_MODES", "overlayfs,hermes,soci"), ",") {
				b.Run(fmt.Sprintf("%s/%s/%d", im.name, mode, rep), func(b *testing.B) {
					ready, pulled, bytes, warm := start(b, origin, cache, im, mode)
					record(run{Image: im.name, Mode: mode, Rep: rep, ReadySec: ready.Seconds(), PullSec: pulled.Seconds(), OriginBytes: bytes})
					if warm > 0 {
						limit := warm + time.Duration(float64(im.readBytes)*8/bps*float64(time.Second))
						record(run{Image: im.name, Mode: "limit", Rep: rep, ReadySec: limit.Seconds(), OriginBytes: im.readBytes})
					}
				})
			}
		}
	}
	report(b, images, runs, bandwidth)
}

// prepare pushes the image, chooses the workload, builds its index into the
// cache, and copies the index next to the image at the origin (soci mode).
func prepare(b *testing.B, origin *harness.Registry, cache *harness.HermesRegistry, kind string, spec imagegen.Spec, scale float64) *benchImage {
	b.Helper()
	ctx := context.Background()
	t0 := time.Now()
	img, err := imagegen.Image(spec)
	if err != nil {
		b.Fatal(err)
	}
	im := &benchImage{name: kind, spec: spec, ref: origin.Host + "/bench/" + strings.ToLower(kind) + ":1"}
	if _, err := imagegen.Push(ctx, im.ref, img); err != nil {
		b.Fatal(err)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		sz, _ := l.Size()
		im.size += sz
	}
	tree, err := imagegen.Tree(img)
	if err != nil {
		b.Fatal(err)
	}
	im.files, im.readBytes = imagegen.Workload(tree, im.size)
	b.Logf("image %s: %s in %d layers, pushed in %s; workload reads %d files, %s (%.1f%%)",
		kind, human(im.size), len(layers), time.Since(t0).Round(time.Second), len(im.files), human(im.readBytes), 100*float64(im.readBytes)/float64(im.size))

	t0 = time.Now()
	bld, err := builder.New(builder.Config{CacheHost: cache.Host, TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	// Scaled-down images keep the full-size ratio of layer to min size.
	minLayer := max(int64(float64(builder.DefaultMinLayerSize)*min(scale, 1)), 1)
	settings := builder.DefaultSettings()
	if span, _ := strconv.ParseInt(env("HERMES_BENCH_SPAN_SIZE", "0"), 10, 64); span > 0 {
		settings = settings.WithSpanSize(span)
	}
	settings.MinLayerSize = minLayer
	res, err := bld.Build(ctx, builder.Request{Image: im.ref, Settings: settings})
	if err != nil {
		b.Fatal(err)
	}
	p := res.Platforms[0]
	if p.Index == nil {
		b.Fatalf("no index built for %s", im.ref)
	}
	for _, l := range p.Layers {
		if l.Ztoc != nil {
			im.ztocBytes += l.Ztoc.Size
		}
	}
	named, _ := names.ParseReference(im.ref)
	im.spanBytes = touchedSpans(b, cache.Host+"/"+names.Repository(named), p, im.files)
	b.Logf("index of %s built in %s: %s of zTOCs; the workload touches %s of spans and unindexed layers",
		kind, time.Since(t0).Round(time.Second), human(im.ztocBytes), human(im.spanBytes))
	harness.CopyArtifact(b, cache.Host+"/"+names.Repository(named), strings.TrimSuffix(im.ref, ":1"), *p.Index)
	return im
}

// touchedSpans is what a lazy start should take from the origin for the
// workload's files: the compressed bytes of every span holding part of one
// of them, and whole the layers without a zTOC (fetched at start).
func touchedSpans(b *testing.B, cacheRepo string, p builder.PlatformResult, files []string) int64 {
	b.Helper()
	repo, err := remote.NewRepository(cacheRepo)
	if err != nil {
		b.Fatal(err)
	}
	repo.PlainHTTP = true
	want := map[string]bool{}
	for _, f := range files {
		want[f] = true
	}
	var total int64
	for _, l := range p.Layers {
		if l.Ztoc == nil {
			total += l.Size
			continue
		}
		raw, err := content.FetchAll(context.Background(), repo, *l.Ztoc)
		if err != nil {
			b.Fatal(err)
		}
		z, err := ztoc.Unmarshal(bytes.NewReader(raw))
		if err != nil {
			b.Fatal(err)
		}
		zi, err := z.Zinfo()
		if err != nil {
			b.Fatal(err)
		}
		spans := map[compression.SpanID]bool{}
		for _, f := range z.FileMetadata {
			if !want[strings.TrimPrefix(f.Name, "./")] || f.UncompressedSize == 0 {
				continue
			}
			first := zi.UncompressedOffsetToSpanID(f.UncompressedOffset)
			last := zi.UncompressedOffsetToSpanID(f.UncompressedOffset + f.UncompressedSize - 1)
			for id := first; id <= last; id++ {
				spans[id] = true
			}
		}
		for id := range spans {
			total += int64(zi.EndCompressedOffset(id, compression.Offset(l.Size)) - zi.StartCompressedOffset(id))
		}
		zi.Close()
	}
	return total
}

// start measures one cold start in a fresh containerd (and snapshotter):
// from the pull's start to the ready line. For overlayfs it also measures a
// warm start of the same image afterwards.
func start(b *testing.B, origin *harness.Registry, cache *harness.HermesRegistry, im *benchImage, mode string) (ready, pulled time.Duration, originBytes int64, warm time.Duration) {
	b.Helper()
	hostsDir := filepath.Join(harness.TempDir(b, "hosts"), "certs.d")
	harness.WriteHostsFile(b, hostsDir, origin.Host, origin.URL)
	opts := harness.ContainerdOptions{HostsDir: hostsDir}
	sn := "overlayfs"
	var s *harness.HermesSnapshotter
	if mode != "overlayfs" {
		so := harness.SnapshotterOptions{HostsDir: hostsDir, LogLevel: "info"}
		switch mode {
		case "hermes":
			so.CacheURL = cache.URL
		case "soci":
			so.Config = "hermes.upstream_discovery = true"
		}
		s = harness.StartHermesSnapshotter(b, so)
		sn = "hermes"
		opts.ProxySnapshotters = map[string]string{sn: s.Socket}
	}
	ctrd := harness.StartContainerd(b, opts)
	if s != nil {
		s.LinkContainerd(b, ctrd.Socket)
	}
	client := ctrd.Client(b)
	ctx, cancel := context.WithTimeout(ctrd.Context(b), 30*time.Minute)
	defer cancel()

	from := len(origin.Output())
	t0 := time.Now()
	img, err := client.Pull(ctx, im.ref, containerd.WithPullUnpack, containerd.WithPullSnapshotter(sn),
		containerd.WithResolver(ctrd.Resolver()),
		containerd.WithImageHandlerWrapper(ctdsnapshotters.AppendInfoHandlerWrapper(im.ref)))
	if err != nil {
		b.Fatalf("pull %s (%s): %v", im.ref, mode, err)
	}
	pulled = time.Since(t0)
	runToReady(b, ctx, client, img, sn, "cold", im.files)
	ready = time.Since(t0)
	originBytes = servedBytes(origin.Output()[from:])

	if mode == "overlayfs" {
		t0 = time.Now()
		runToReady(b, ctx, client, img, sn, "warm", im.files)
		warm = time.Since(t0)
	}
	return ready, pulled, originBytes, warm
}

// runToReady starts a container that reads files and prints READY, and
// returns once READY appeared (then removes the container).
func runToReady(b *testing.B, ctx context.Context, client *containerd.Client, img containerd.Image, sn, id string, files []string) {
	b.Helper()
	script := "cat"
	for _, f := range files {
		script += " '/" + f + "'"
	}
	script += " >/dev/null && echo READY"
	ctr, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithSnapshotter(sn),
		containerd.WithNewSnapshot(id+"-rootfs", img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/bin/sh", "-c", script)))
	if err != nil {
		b.Fatal(err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
	var out, errOut bytes.Buffer
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &out, &errOut)))
	if err != nil {
		b.Fatal(err)
	}
	defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	exit, err := task.Wait(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		b.Fatal(err)
	}
	st := <-exit
	task.CloseIO(ctx)
	if io := task.IO(); io != nil {
		io.Wait()
	}
	if st.ExitCode() != 0 || !strings.Contains(out.String(), "READY") {
		b.Fatalf("workload exited %d: %s", st.ExitCode(), errOut.String())
	}
}

var accessLine = regexp.MustCompile(`"(?:GET|HEAD) \S+ HTTP/[0-9.]+" \d{3} (\d+)`)

// servedBytes sums the response bytes in a slice of distribution's access
// log.
func servedBytes(log string) int64 {
	var n int64
	for _, m := range accessLine.FindAllStringSubmatch(log, -1) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		n += v
	}
	return n
}

// report writes lazy.json and lazy.txt with the medians and the goals.
func report(b *testing.B, images []*benchImage, runs []run, bandwidth string) {
	var sums []summary
	get := func(image, mode string) summary {
		for _, s := range sums {
			if s.Image == image && s.Mode == mode {
				return s
			}
		}
		return summary{}
	}
	var txt strings.Builder
	fmt.Fprintf(&txt, "Lazy start over a %s origin link (%s); medians of %s runs\n\n", bandwidth, time.Now().UTC().Format(time.RFC3339), env("HERMES_BENCH_REPS", "3"))
	fmt.Fprintf(&txt, "%-5s %-10s %12s %14s\n", "image", "mode", "ready (s)", "origin bytes")
	for _, im := range images {
		for _, mode := range []string{"overlayfs", "hermes", "soci", "limit"} {
			var secs, byts []float64
			for _, r := range runs {
				if r.Image == im.name && r.Mode == mode {
					secs = append(secs, r.ReadySec)
					byts = append(byts, float64(r.OriginBytes))
				}
			}
			if len(secs) == 0 {
				continue
			}
			s := summary{Image: im.name, ImageBytes: im.size, WorkloadBytes: im.readBytes, WorkloadFiles: len(im.files), ZtocBytes: im.ztocBytes, SpanBytes: im.spanBytes,
				Mode: mode, MedianSec: harness.Median(secs), MedianBytes: int64(harness.Median(byts))}
			sums = append(sums, s)
			fmt.Fprintf(&txt, "%-5s %-10s %12.2f %14s\n", im.name, mode, s.MedianSec, human(s.MedianBytes))
		}
		fmt.Fprintf(&txt, "      image %s, workload %d files %s, zTOCs %s, spans touched %s\n", human(im.size), len(im.files), human(im.readBytes), human(im.ztocBytes), human(im.spanBytes))
	}
	fmt.Fprintf(&txt, "\ngoals:\n")
	for _, im := range images {
		o, h, s, l := get(im.name, "overlayfs"), get(im.name, "hermes"), get(im.name, "soci"), get(im.name, "limit")
		if h.MedianSec == 0 {
			continue
		}
		fmt.Fprintf(&txt, "  %s: overlayfs/hermes = %.1fx (goal >= 25)\n", im.name, o.MedianSec/h.MedianSec)
		fmt.Fprintf(&txt, "  %s: hermes origin bytes / spans touched = %.3f (goal: 1, plus manifest and config)\n", im.name, float64(h.MedianBytes)/float64(im.spanBytes))
		if im.name == "C" {
			fmt.Fprintf(&txt, "  %s: hermes/soci = %.2f (goal <= 0.5); hermes/limit = %.2f (stretch <= 1.5)\n", im.name, h.MedianSec/s.MedianSec, h.MedianSec/l.MedianSec)
		} else {
			fmt.Fprintf(&txt, "  %s: hermes/soci = %.2f (goal <= 1)\n", im.name, h.MedianSec/s.MedianSec)
		}
	}
	harness.WriteBench(b, "lazy", map[string]any{"bandwidth": bandwidth, "runs": runs, "summary": sums}, txt.String())
}

func bitsPerSecond(rate string) (float64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(rate, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f * u.mult, err
		}
	}
	return 0, fmt.Errorf("bandwidth %q: want <n>mbit, <n>gbit or <n>kbit", rate)
}

func human(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
