package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
	"github.com/hermes-oci/hermes/tools/realimages"
)

// Modes, in the order each image runs them.
// overlayfs runs first so that nothing of another mode is on the node;
// "warm" is overlayfs again with the image on the node.
var modes = []string{"overlayfs", "warm", "soci", "hermes"}

type benchImage struct {
	name      string
	link      string // tc rate of its origin
	bps       float64
	origin    *harness.Registry
	ref       string // the image at the origin
	sociRef   string // soci convert's image at the origin
	img       v1.Image
	size      int64 // compressed bytes of all layers
	layers    int
	cmd       []string         // synthetic images: the workload's command ({port} replaced); real: the image's own
	files     []string         // what the workload opens
	limit     int64            // compressed bytes of the deflate blocks holding files
	sociBuild float64          // seconds, soci's IndexBuilder.Convert
	hermesIdx float64          // seconds, trigger Pod to policy status Ready
	real      bool             // built by realimages
	runs      map[string][]run // mode → repetitions
}

type run struct {
	ReadySec    float64 `json:"pod_ready_seconds"`
	HTTPSec     float64 `json:"first_http_200_seconds"`
	OriginBytes int64   `json:"origin_bytes"`
	Requests    int     `json:"blob_requests"`
	Ranges      int     `json:"range_requests"`
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func BenchmarkCluster(b *testing.B) {
	harness.RequireRoot(b)
	harness.RequireFUSE(b)
	reps, _ := strconv.Atoi(env("HERMES_BENCH_REPS", "3"))
	if reps < 1 {
		b.Fatalf("HERMES_BENCH_REPS=%d must be positive", reps)
	}
	ctx := context.Background()
	bins := buildPeer(b)

	origins := map[string]*harness.Registry{}
	originFor := func(link string) *harness.Registry {
		if o, ok := origins[link]; ok {
			return o
		}
		o := harness.StartRegistry(b, harness.RegistryOptions{})
		origins[link] = o
		return o
	}
	var images []*benchImage
	for _, name := range strings.Split(env("HERMES_BENCH_CLUSTER_IMAGES", "R,C,R4,node,ml"), ",") {
		im := prepare(b, ctx, strings.TrimSpace(name), originFor)
		im.sociRef = strings.Replace(im.ref, ":v1", ":v1-soci", 1)
		out, err := exec.Command(bins.socibuild, "-ref", im.ref, "-dir", harness.TempDir(b, "socibuild"), "-convert", im.sociRef).Output()
		if err != nil {
			b.Fatalf("soci convert %s: %v", im.ref, err)
		}
		var res struct {
			BuildSeconds float64 `json:"build_seconds"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("socibuild output %q: %v", out, err)
		}
		im.sociBuild = res.BuildSeconds
		b.Logf("%s: %d layers, %.2f GB gzip; workload opens %d files in %.1f MB of deflate blocks; soci convert %.1f s",
			im.name, im.layers, float64(im.size)/1e9, len(im.files), float64(im.limit)/1e6, im.sociBuild)
		images = append(images, im)
	}

	cachePort := harness.FreePort(b)
	ctlRoot := filepath.Join(harness.TempDir(b, "cache"), "registry")
	var hosts []string
	for _, o := range origins {
		hosts = append(hosts, o.Host)
	}
	shaped := false
	top := b
	for rep := 1; rep <= reps; rep++ {
		b.Run(fmt.Sprintf("rep%d", rep), func(b *testing.B) {
			sock := startSocid(b, bins.socid, hosts)
			c := harness.StartCluster(b, harness.ClusterOptions{Hermes: true, OverlayfsRuntime: true,
				CacheURL: fmt.Sprintf("http://127.0.0.1:%d", cachePort), Registries: hosts,
				ProxyRuntimes: map[string]string{"soci": sock}})
			c.InstallCRDs(b)
			harness.StartController(b, c.Kube, harness.ControllerOptions{Port: cachePort, Root: ctlRoot, LogLevel: "info"})
			cl := c.Client(b)
			for _, rc := range []string{"overlayfs", "soci"} {
				if err := cl.Create(ctx, harness.RuntimeClass(rc)); err != nil {
					b.Fatal(err)
				}
			}
			buildIndexes(b, ctx, c, images, rep == 1)
			if !shaped {
				// Only now is the link slowed: pushing and indexing are
				// not what is measured.
				for link, o := range origins {
					port, _ := strconv.Atoi(o.Host[strings.LastIndex(o.Host, ":")+1:])
					harness.ShapePort(top, port, link)
				}
				shaped = true
			}
			for _, im := range images {
				for _, mode := range modes {
					r := start(b, ctx, c, im, mode)
					im.runs[mode] = append(im.runs[mode], r)
					b.Logf("rep %d %s %s: Pod Ready %.2f s, first HTTP 200 %.2f s, %.1f MB from the origin in %d blob GETs (%d ranges)",
						rep, im.name, mode, r.ReadySec, r.HTTPSec, float64(r.OriginBytes)/1e6, r.Requests, r.Ranges)
				}
			}
		})
	}
	report(b, images, reps)
}

type peerBins struct{ socid, socibuild string }

// buildPeer builds the peer's daemon and soci's index builder.
func buildPeer(b *testing.B) peerBins {
	dir := harness.TempDir(b, "peer")
	bins := peerBins{socid: filepath.Join(dir, "socid"), socibuild: filepath.Join(dir, "socibuild")}
	root, err := harness.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./socid", "./bench/build/socibuild")
	cmd.Dir = filepath.Join(root, "tools")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the peer: %v\n%s", err, out)
	}
	return bins
}

// startSocid starts upstream's daemon with its defaults and a config that
// only says the origins speak plain HTTP, as its users write it.
func startSocid(b *testing.B, bin string, hosts []string) string {
	dir := harness.TempDir(b, "socid")
	root := filepath.Join(dir, "root")
	b.Cleanup(func() { harness.UnmountBelow(b, root) })
	var cfg strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&cfg, "[[resolver.host.%q.mirrors]]\nhost = %q\ninsecure = true\n", h, h)
	}
	conf := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "soci.sock")
	p := harness.Start(b, "soci-snapshotter-grpc", dir, bin, []string{"--address", sock, "--config", conf, "--root", root})
	harness.WaitFor(b, p, 30*time.Second, "soci socket", harness.FileExists(sock))
	return sock
}

// prepare makes an image, pushes it to the origin of its link and works
// out the workload and its physical limit.
func prepare(b *testing.B, ctx context.Context, name string, originFor func(string) *harness.Registry) *benchImage {
	im := &benchImage{name: name, link: "100mbit", runs: map[string][]run{}}
	var spec *imagegen.Spec
	switch name {
	case "R":
		s := imagegen.PresetRandom(imagegen.BenchRandomLayers, imagegen.BenchRandomLayerSize)
		spec = &s
	case "C":
		s := imagegen.PresetCompressible(imagegen.BenchCompressibleLayers, imagegen.BenchCompressibleSize, imagegen.BenchCompressibleFiles)
		spec = &s
	case "R4":
		s := imagegen.PresetRandom(4*imagegen.BenchRandomLayers, imagegen.BenchRandomLayerSize)
		spec = &s
	case "node", "ml":
		im.real = true
		if name == "ml" {
			im.link = "1gbit"
		}
	default:
		b.Fatalf("HERMES_BENCH_CLUSTER_IMAGES: unknown image %q (R, C, R4, node, ml)", name)
	}
	var err error
	if spec != nil {
		if im.img, err = imagegen.Image(*spec); err != nil {
			b.Fatal(err)
		}
		tree, err := imagegen.Tree(im.img)
		if err != nil {
			b.Fatal(err)
		}
		var size int64 // the image's file bytes: the workload reads about 2% of them
		for _, fi := range tree {
			size += fi.Size
		}
		paths, _ := imagegen.Workload(tree, size)
		for _, p := range paths {
			im.files = append(im.files, "/"+p)
		}
		im.cmd = []string{"/bin/sh", "-c", "mkdir -p /tmp/www && sha256sum " + strings.Join(im.files, " ") +
			" > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www"}
		im.files = append(im.files, "/bin/busybox")
	} else {
		r, err := realimages.Lookup(name)
		if err != nil {
			b.Fatal(err)
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		if im.img, err = realimages.Build(ctx, r, log); err != nil {
			b.Fatal(err)
		}
		if im.files, _, err = realimages.Trace(ctx, r, harness.FreePort(b)); err != nil {
			b.Fatal(err)
		}
	}
	if im.bps, err = bitsPerSecond(im.link); err != nil {
		b.Fatal(err)
	}
	im.origin = originFor(im.link)
	im.ref = im.origin.Host + "/bench/" + strings.ToLower(name) + ":v1"
	if _, err := imagegen.Push(ctx, im.ref, im.img); err != nil {
		b.Fatal(err)
	}
	ls, err := im.img.Layers()
	if err != nil {
		b.Fatal(err)
	}
	var blocks []*layerBlocks
	for _, l := range ls {
		lb, err := indexLayer(l)
		if err != nil {
			b.Fatal(err)
		}
		blocks = append(blocks, lb)
		im.size += lb.size
	}
	im.layers = len(ls)
	if im.limit, err = limitBytes(blocks, im.files); err != nil {
		b.Fatal(err)
	}
	return im
}

// buildIndexes applies a policy for the images and waits until the
// controller has built (or found) each index; on the first repetition it
// records the build time per image, one image at a time.
func buildIndexes(b *testing.B, ctx context.Context, c *harness.Cluster, images []*benchImage, record bool) {
	cl := c.Client(b)
	policy := &v1alpha1.HermesPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: v1alpha1.HermesPolicySpec{
		ImageSelectors: []v1alpha1.ImageSelector{{ImageRegex: `/bench/[a-z0-9]+:v1$`}}, Platforms: []string{"linux/amd64"}}}
	if err := cl.Create(ctx, policy); err != nil {
		b.Fatal(err)
	}
	for i, im := range images {
		t0 := time.Now()
		trigger := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("ask-%d", i)}, Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"hermes.dev/nowhere": "true"}, Containers: []corev1.Container{{Name: "c", Image: im.ref}}}}
		if err := cl.Create(ctx, trigger); err != nil {
			b.Fatal(err)
		}
		harness.WaitFor(b, nil, 60*time.Minute, "index of "+im.ref, func() error {
			var p v1alpha1.HermesPolicy
			if err := cl.Get(ctx, client.ObjectKey{Name: "bench"}, &p); err != nil {
				return err
			}
			for _, st := range p.Status.Images {
				if st.Image == im.ref || strings.HasSuffix(st.Image, strings.TrimPrefix(im.ref, im.origin.Host)) {
					switch st.Phase {
					case v1alpha1.PhaseReady:
						return nil
					case v1alpha1.PhaseFailed:
						b.Fatalf("index of %s failed: %s", im.ref, st.Message)
					}
					return fmt.Errorf("%s", st.Phase)
				}
			}
			return fmt.Errorf("not in the policy status yet")
		})
		if record {
			im.hermesIdx = time.Since(t0).Seconds()
			b.Logf("index of %s: %.1f s", im.name, im.hermesIdx)
		}
	}
}

// start starts the image's workload in a Pod with mode's snapshotter and
// measures Pod Ready and the first HTTP 200 from the Pod's creation, and
// the bytes the origin served. "warm" runs overlayfs again with the image
// already on the node; the image leaves the node after it.
func start(b *testing.B, ctx context.Context, c *harness.Cluster, im *benchImage, mode string) run {
	cl := c.Client(b)
	port := harness.FreePort(b)
	ref := im.ref
	if mode == "soci" {
		ref = im.sociRef
	}
	ctr := corev1.Container{Name: "app", Image: ref, Env: []corev1.EnvVar{{Name: "PORT", Value: strconv.Itoa(port)}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(int32(port))}},
			PeriodSeconds: 1, FailureThreshold: 3600}}
	for _, a := range im.cmd {
		ctr.Command = append(ctr.Command, strings.ReplaceAll(a, "{port}", strconv.Itoa(port)))
	}
	pod := harness.HostPod("default", fmt.Sprintf("%s-%s", strings.ToLower(im.name), mode), ctr)
	switch mode {
	case "overlayfs", "warm":
		rc := "overlayfs"
		pod.Spec.RuntimeClassName = &rc
	case "soci":
		rc := "soci"
		pod.Spec.RuntimeClassName = &rc
	}
	from := len(im.origin.Output())
	t0 := time.Now()
	if err := cl.Create(ctx, pod); err != nil {
		b.Fatal(err)
	}
	var first time.Duration
	harness.WaitFor(b, nil, 60*time.Minute, fmt.Sprintf("HTTP 200 from %s (%s)", im.name, mode), func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		first = time.Since(t0)
		return nil
	})
	ready := c.WaitPodReady(b, "default", pod.Name, t0, 60*time.Minute)
	var bytes int64
	var reqs, ranges int
	for _, r := range im.origin.Requests(from) {
		if strings.Contains(r.Path, "/blobs/") && r.Method == http.MethodGet {
			bytes += r.Bytes
			reqs++
			if r.Range {
				ranges++
			}
		}
	}
	if err := cl.Delete(ctx, pod); err != nil {
		b.Fatal(err)
	}
	harness.WaitFor(b, nil, 5*time.Minute, "Pod "+pod.Name+" gone", func() error {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	// The next mode starts from nothing (overlayfs keeps the image for
	// the warm start): the image and any layer blob a pull left in the
	// content store go.
	if mode != "overlayfs" {
		c.Containerd.Ctr(b, "images", "rm", "--sync", ref)
		m, err := im.img.Manifest()
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range m.Layers {
			_, _ = c.Containerd.CtrErr(time.Minute, "content", "rm", l.Digest.String())
		}
	}
	return run{ReadySec: ready.Seconds(), HTTPSec: first.Seconds(), OriginBytes: bytes, Requests: reqs, Ranges: ranges}
}

func bitsPerSecond(rate string) (float64, error) {
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if v, ok := strings.CutSuffix(rate, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f * u.mult, err
		}
	}
	return 0, fmt.Errorf("bandwidth %q: want <n>mbit, <n>gbit or <n>kbit", rate)
}
