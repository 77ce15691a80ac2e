package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/controller/builder/gzindex"
	"github.com/hermes-oci/hermes/controller/builder/ztocfb"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// Row is one measured run.
type Row struct {
	Image   string  `json:"image"`
	Path    string  `json:"path"`
	Seconds float64 `json:"seconds"`
	// MBps is indexed compressed megabytes (10^6) per second of wall time.
	MBps float64 `json:"mb_per_s"`
	// PeakRSSMiB is the process's maximum resident set (0 when not one
	// process, as for gzip -dc).
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	Note       string  `json:"note,omitempty"`
}

// Phase is the CPU time of one pass over one layer, to see where the time
// goes.
type Phase struct {
	Image      string  `json:"image"`
	Layer      string  `json:"layer"`
	Pass       string  `json:"pass"`
	CPUSeconds float64 `json:"cpu_seconds"`
	MBps       float64 `json:"mb_per_cpu_s"`
}

// Report is what the benchmark writes as build.json.
type Report struct {
	When   time.Time         `json:"when"`
	CPUs   int               `json:"cpus"`
	Go     string            `json:"go"`
	Images map[string]Sizes  `json:"images"`
	Rows   []Row             `json:"rows"`
	Phases []Phase           `json:"phases"`
	Goals  map[string]string `json:"goals"`
}

// Sizes of a benchmark image.
type Sizes struct {
	Layers         int   `json:"layers"`
	CompressedMB   int64 `json:"compressed_mb"`
	IndexedMB      int64 `json:"indexed_mb"` // layers at or above the min size
	UncompressedMB int64 `json:"uncompressed_mb"`
}

// images are the two benchmark shapes: (R) random, (C) compressible.
// HERMES_BENCH_SCALE (default 1) shrinks them for a quick check.
var images = []struct {
	name string
	spec func() imagegen.Spec
}{
	{"R", func() imagegen.Spec {
		return imagegen.PresetRandom(imagegen.BenchRandomLayers, scaled(imagegen.BenchRandomLayerSize))
	}},
	{"C", func() imagegen.Spec {
		return imagegen.PresetCompressible(imagegen.BenchCompressibleLayers, scaled(imagegen.BenchCompressibleSize), int(scaled(imagegen.BenchCompressibleFiles)))
	}},
}

func scaled(n int64) int64 {
	f, err := strconv.ParseFloat(os.Getenv("HERMES_BENCH_SCALE"), 64)
	if err != nil || f <= 0 || f > 1 {
		return n
	}
	return int64(float64(n) * f)
}

// BenchmarkBuild measures, for each image, end to end from a loopback
// origin: `hermes build` (one-pass and staged), soci's IndexBuilder after a
// pull into a containerd content store, and `gzip -dc` of the same layers
// on two workers (the physical limit). Every path runs as its own process
// for its peak RSS. HERMES_BENCH_BASELINE adds rows for another hermes
// binary; HERMES_BENCH_HUGE adds image H (see doc.go). Results go to
// $HERMES_BENCH_OUT/build.{json,txt}.
func BenchmarkBuild(b *testing.B) {
	harness.BenchOut(b) // fail before the long run if results cannot be written
	huge := hugeSize(b)
	be := &bench{b: b, bins: buildBinaries(b), baseline: baselineBinary(b), rep: &Report{When: time.Now().UTC(), CPUs: runtime.NumCPU(), Go: runtime.Version(), Images: map[string]Sizes{},
		Goals: map[string]string{"R": ">= 250 MB/s", "C": ">= 60 MB/s (stretch 85)", "peak RSS": "<= 256 MiB"}}}
	origin := harness.StartRegistry(b, harness.RegistryOptions{})

	for i := 0; i < b.N; i++ {
		for _, im := range images {
			img, err := imagegen.Image(im.spec())
			if err != nil {
				b.Fatalf("imagegen %s: %v", im.name, err)
			}
			ref := origin.Host + "/bench/" + strings.ToLower(im.name) + ":v1"
			ctx := context.Background()
			if _, err := imagegen.Push(ctx, ref, img); err != nil {
				b.Fatalf("push %s: %v", ref, err)
			}
			blobs, sizes := layerBlobs(b, origin, img)
			be.rep.Images[im.name] = sizes
			mb := float64(sizes.IndexedMB)

			be.run(im.name, mb, "hermes build (one-pass)", true, "network included", be.hermes(be.bins.hermes, ref, false))
			if be.baseline != "" {
				be.run(im.name, mb, "baseline: hermes build (one-pass)", true, "HERMES_BENCH_BASELINE, same origin", be.hermes(be.baseline, ref, false))
			}
			be.run(im.name, mb, "hermes build --stage-layers", true, "temp file + soci ztoc.Builder", be.hermes(be.bins.hermes, ref, true))

			var soci struct {
				PullSeconds  float64 `json:"pull_seconds"`
				BuildSeconds float64 `json:"build_seconds"`
			}
			be.run(im.name, mb, "soci IndexBuilder (pull + build)", true, "containerd local store", func() (*exec.Cmd, func() error) {
				dir := b.TempDir()
				c := exec.Command(be.bins.socibuild, "-ref", ref, "-dir", dir)
				c.Env = append(os.Environ(), "TMPDIR="+dir)
				var stdout bytes.Buffer
				c.Stdout = &stdout
				return c, func() error { return json.Unmarshal(stdout.Bytes(), &soci) }
			})
			be.rep.Rows = append(be.rep.Rows, Row{Image: im.name, Path: "soci IndexBuilder (build only)", Seconds: soci.BuildSeconds,
				MBps: mb / soci.BuildSeconds, Note: fmt.Sprintf("of the run above; pull took %.2fs", soci.PullSeconds)})
			be.run(im.name, mb, "gzip -dc, 2 workers (limit)", false, "same layer blobs from the origin's storage", func() (*exec.Cmd, func() error) {
				args := []string{"-P2", "-n1", "sh", "-c", `gzip -dc "$0" > /dev/null`}
				c := exec.Command("xargs", args...)
				c.Stdin = strings.NewReader(strings.Join(blobs, "\n"))
				return c, nil
			})

			be.rep.Phases = append(be.rep.Phases, phases(b, im.name, blobs[0])...)
		}
		if huge > 0 {
			be.huge(huge)
		}
	}
	write(b, *be.rep)
}

// bench is one benchmark run: what it runs and what it found.
type bench struct {
	b        *testing.B
	bins     binaries
	baseline string // another hermes binary to compare with, or ""
	rep      *Report
}

// run measures one path for image (mb indexed megabytes) and adds its row.
func (be *bench) run(image string, mb float64, path string, rss bool, note string, cmd func() (*exec.Cmd, func() error)) {
	c, after := cmd()
	sec, peak := measure(be.b, c)
	if after != nil {
		if err := after(); err != nil {
			be.b.Fatalf("%s %s: %v", image, path, err)
		}
	}
	row := Row{Image: image, Path: path, Seconds: sec, MBps: mb / sec, Note: note}
	if rss {
		row.PeakRSSMiB = peak
	}
	be.rep.Rows = append(be.rep.Rows, row)
	be.b.Logf("%s %-34s %7.2fs %7.1f MB/s %7.1f MiB", image, path, sec, mb/sec, row.PeakRSSMiB)
}

// hermes runs `hermes build` of ref with binary bin into a fresh cache
// registry and checks that it built an index.
func (be *bench) hermes(bin, ref string, stage bool) func() (*exec.Cmd, func() error) {
	b := be.b
	return func() (*exec.Cmd, func() error) {
		cache := harness.StartRegistry(b, harness.RegistryOptions{})
		tmp := b.TempDir()
		args := []string{"build", "--cache", cache.Host, "--progress", "none", "--output", "json"}
		if stage {
			args = append(args, "--stage-layers")
		}
		c := exec.Command(bin, append(args, ref)...)
		c.Env = append(os.Environ(), "TMPDIR="+tmp)
		var stdout bytes.Buffer
		c.Stdout = &stdout
		return c, func() error {
			var res builder.Result
			if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
				return fmt.Errorf("result: %v: %s", err, stdout.String())
			}
			if len(res.Platforms) != 1 || res.Platforms[0].Index == nil || res.Platforms[0].Existed {
				return fmt.Errorf("unexpected result %+v", res)
			}
			cache.Stop(10 * time.Second)
			return nil
		}
	}
}

// binaries are the programs the benchmark runs.
type binaries struct{ hermes, socibuild string }

func buildBinaries(b *testing.B) binaries {
	dir := b.TempDir()
	bins := binaries{hermes: filepath.Join(dir, "hermes"), socibuild: filepath.Join(dir, "socibuild")}
	for pkg, out := range map[string]string{
		"github.com/hermes-oci/hermes/controller/cmd/hermes":       bins.hermes,
		"github.com/hermes-oci/hermes/tools/bench/build/socibuild": bins.socibuild,
	} {
		if o, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			b.Fatalf("go build %s: %v\n%s", pkg, err, o)
		}
	}
	return bins
}

// measure runs c to completion under GNU time and returns its wall time and
// peak RSS in MiB. The rusage of a child of this process would not do: Go
// starts children with vfork, and Linux carries the parent's RSS high-water
// mark across the exec into the child's.
func measure(b *testing.B, c *exec.Cmd) (float64, float64) {
	const timeBin = "/usr/bin/time" // GNU time (Debian package "time"); the shell keyword will not do
	if _, err := os.Stat(timeBin); err != nil {
		harness.Missing(b, "GNU time at %s, for peak RSS: %v", timeBin, err)
	}
	report := filepath.Join(b.TempDir(), "rss")
	c.Args = append([]string{timeBin, "-f", "%M", "-o", report}, c.Args...)
	c.Path = timeBin
	var stderr bytes.Buffer
	if c.Stderr == nil {
		c.Stderr = &stderr
	}
	start := time.Now()
	if err := c.Run(); err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(c.Args, " "), err, stderr.String())
	}
	sec := time.Since(start).Seconds()
	out, err := os.ReadFile(report)
	if err != nil {
		b.Fatalf("peak RSS: %v", err)
	}
	lines := strings.Fields(string(out))
	kib, err := strconv.ParseFloat(lines[len(lines)-1], 64)
	if err != nil {
		b.Fatalf("peak RSS %q: %v", out, err)
	}
	return sec, kib / 1024
}

// layerBlobs returns the paths of the image's indexed gzip layers in the
// origin's storage, and the image's sizes.
func layerBlobs(b *testing.B, origin *harness.Registry, img v1.Image) ([]string, Sizes) {
	ls, err := img.Layers()
	if err != nil {
		b.Fatal(err)
	}
	var s Sizes
	var paths []string
	for _, l := range ls {
		d, _ := l.Digest()
		size, _ := l.Size()
		s.Layers++
		s.CompressedMB += size
		if size < builder.DefaultMinLayerSize {
			continue
		}
		s.IndexedMB += size
		p := filepath.Join(origin.Root, "docker/registry/v2/blobs", d.Algorithm, d.Hex[:2], d.Hex, "data")
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("layer blob in the origin's storage: %v", err)
		}
		paths = append(paths, p)
		s.UncompressedMB += uncompressedSize(b, l)
	}
	s.CompressedMB /= 1e6
	s.IndexedMB /= 1e6
	s.UncompressedMB /= 1e6
	return paths, s
}

func uncompressedSize(b *testing.B, l v1.Layer) int64 {
	rc, err := l.Uncompressed()
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// phases times each pass soci's BuildZtoc makes over one layer file, the
// one-pass gzindex, and gzip -dc, in CPU seconds of this process (children
// for gzip), so the numbers hold on a busy machine too.
func phases(b *testing.B, image, blob string) []Phase {
	fi, err := os.Stat(blob)
	if err != nil {
		b.Fatal(err)
	}
	mb := float64(fi.Size()) / 1e6
	layer := filepath.Base(filepath.Dir(blob))[:12]
	var out []Phase
	add := func(pass string, f func() error, self bool) {
		before := cpu(self)
		if err := f(); err != nil {
			b.Fatalf("%s: %v", pass, err)
		}
		s := cpu(self) - before
		out = append(out, Phase{Image: image, Layer: layer, Pass: pass, CPUSeconds: s, MBps: mb / s})
		b.Logf("%s %s %-50s %6.2f cpu-s %7.1f MB/cpu-s", image, layer, pass, s, mb/s)
	}
	add("soci pass 1: zinfo checkpoints (C, zlib)", func() error {
		z, err := compression.NewZinfoFromFile(compression.Gzip, blob, builder.DefaultSpanSize)
		if err == nil {
			z.Close()
		}
		return err
	}, true)
	add("soci pass 2: file list (Go gzip + tar)", func() error {
		tb := ztoc.NewTocBuilder()
		tb.RegisterTarProvider(compression.Gzip, ztoc.TarProviderGzip)
		_, _, err := tb.TocFromFile(compression.Gzip, blob)
		return err
	}, true)
	add("soci pass 3: span digests (sha256)", func() error {
		f, err := os.Open(blob)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(sha256.New(), f)
		return err
	}, true)
	add("soci BuildZtoc (all three)", func() error {
		_, err := ztoc.NewBuilder("bench").BuildZtoc(blob, builder.DefaultSpanSize)
		return err
	}, true)
	add("hermes gzindex (one pass)", func() error {
		f, err := os.Open(blob)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = gzindex.Build(f, builder.DefaultSpanSize, "bench")
		return err
	}, true)
	add("hermes gzindex (one pass, files aligned)", func() error {
		f, err := os.Open(blob)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = gzindex.BuildWith(f, gzindex.Options{SpanSize: builder.DefaultSpanSize, BuildToolIdentifier: "bench", AlignFilesFrom: builder.DefaultAlignFilesFrom})
		return err
	}, true)
	// The builder's path for a streamed layer, then as it was before
	// checkpoints spilled: same index, zTOC serialized to a file.
	aligned := gzindex.Options{SpanSize: builder.DefaultSpanSize, BuildToolIdentifier: "bench", AlignFilesFrom: builder.DefaultAlignFilesFrom}
	add("hermes gzindex spilled + ztocfb.Write (aligned)", func() error {
		return indexToFile(b, blob, func(src io.Reader, dir string, out io.Writer) error {
			spill, err := os.Create(filepath.Join(dir, "spill"))
			if err != nil {
				return err
			}
			defer spill.Close()
			s, err := gzindex.BuildSpilled(src, aligned, spill)
			if err != nil {
				return err
			}
			cps, n := s.Checkpoints()
			_, err = ztocfb.Write(out, s.Ztoc, cps, n)
			return err
		})
	}, true)
	add("hermes gzindex in memory + ztoc.Marshal (aligned)", func() error {
		return indexToFile(b, blob, func(src io.Reader, _ string, out io.Writer) error {
			z, err := gzindex.BuildWith(src, aligned)
			if err != nil {
				return err
			}
			r, _, err := ztoc.Marshal(z)
			if err == nil {
				_, err = io.Copy(out, r)
			}
			return err
		})
	}, true)
	add("gzip -dc", func() error {
		c := exec.Command("sh", "-c", `gzip -dc "$0" > /dev/null`, blob)
		return c.Run()
	}, false)
	return out
}

// indexToFile runs index over the layer file blob with a temp dir and a
// zTOC file to write.
func indexToFile(b *testing.B, blob string, index func(src io.Reader, dir string, out io.Writer) error) error {
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	dir := b.TempDir()
	out, err := os.Create(filepath.Join(dir, "ztoc"))
	if err != nil {
		return err
	}
	defer out.Close()
	return index(f, dir, out)
}

// cpu returns the user+system CPU seconds of this process (self) or of its
// waited-for children.
func cpu(self bool) float64 {
	who := syscall.RUSAGE_SELF
	if !self {
		who = syscall.RUSAGE_CHILDREN
	}
	var r syscall.Rusage
	_ = syscall.Getrusage(who, &r)
	return float64(r.Utime.Nano()+r.Stime.Nano()) / 1e9
}

func write(b *testing.B, rep Report) {
	var t strings.Builder
	fmt.Fprintf(&t, "SOCI index build, %s, %d CPUs, %s (loopback origin, network included)\n", rep.When.Format(time.RFC3339), rep.CPUs, rep.Go)
	for _, im := range images {
		s := rep.Images[im.name]
		fmt.Fprintf(&t, "  image %s: %d layers, %d MB compressed (%d MB in indexed layers, %d MB uncompressed)\n", im.name, s.Layers, s.CompressedMB, s.IndexedMB, s.UncompressedMB)
	}
	if s, ok := rep.Images["H"]; ok {
		fmt.Fprintf(&t, "  image H: %d layer, %d MB compressed (%d MB uncompressed), generated on the fly by the origin\n", s.Layers, s.CompressedMB, s.UncompressedMB)
	}
	fmt.Fprintf(&t, "\n%-5s %-34s %9s %9s %10s  %s\n", "image", "path", "time", "MB/s", "peak RSS", "note")
	for _, r := range rep.Rows {
		rss := "-"
		if r.PeakRSSMiB > 0 {
			rss = fmt.Sprintf("%.0f MiB", r.PeakRSSMiB)
		}
		fmt.Fprintf(&t, "%-5s %-34s %8.2fs %9.1f %10s  %s\n", r.Image, r.Path, r.Seconds, r.MBps, rss, r.Note)
	}
	fmt.Fprintf(&t, "\nWhere the time goes (one layer, CPU seconds, so load from others does not count):\n")
	for _, p := range rep.Phases {
		fmt.Fprintf(&t, "%-5s %s %-50s %6.2f cpu-s %8.1f MB/cpu-s\n", p.Image, p.Layer, p.Pass, p.CPUSeconds, p.MBps)
	}
	fmt.Fprintf(&t, "\ngoals: R %s, C %s, peak RSS %s\n", rep.Goals["R"], rep.Goals["C"], rep.Goals["peak RSS"])
	harness.WriteBench(b, "build", rep, t.String())
}
