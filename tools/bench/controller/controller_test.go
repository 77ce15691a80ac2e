package controller

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

type result struct {
	Pods              int     `json:"pods"`
	Images            int     `json:"images"`
	Namespaces        int     `json:"namespaces"`
	CreateSeconds     float64 `json:"pods_created_seconds"`
	ReadySeconds      float64 `json:"all_ready_seconds"`
	PeakRSSMiB        float64 `json:"controller_peak_rss_mib"`
	APIRequests       float64 `json:"controller_api_requests"`
	StatusWrites      float64 `json:"status_writes"`
	WritesPerImage    float64 `json:"status_writes_per_image"`
	Builds            float64 `json:"builds"`
	OriginLayerFetchs int     `json:"origin_layer_fetches"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func BenchmarkController(b *testing.B) {
	pods, images := envInt("HERMES_BENCH_PODS", 10000), envInt("HERMES_BENCH_IMAGES", 500)
	const namespaces = 20
	k := harness.StartKube(b)
	k.InstallCRDs(b)
	origin := harness.StartRegistry(b, harness.RegistryOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	t0 := time.Now()
	refs := make([]string, images)
	var wg sync.WaitGroup
	var pushErr atomic.Value
	sem := make(chan struct{}, 8)
	for i := range refs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			img, err := imagegen.Image(imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Random, Size: 32 << 10, Files: 1, Seed: int64(50000 + i)}}})
			if err == nil {
				refs[i] = fmt.Sprintf("%s/bench/img-%03d:v1", origin.Host, i)
				_, err = imagegen.Push(ctx, refs[i], img)
			}
			if err != nil {
				pushErr.Store(err)
			}
		}()
	}
	wg.Wait()
	if err, _ := pushErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d images pushed in %s", images, time.Since(t0).Round(time.Millisecond))

	c := k.Client(b)
	for n := 0; n < namespaces; n++ {
		create(ctx, b, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%02d", n)}})
	}
	ctl := harness.StartController(b, k, harness.ControllerOptions{LogLevel: "info",
		// The harness shortens intervals for tests; the benchmark runs the
		// controller's defaults.
		Args: []string{"--status-interval", "2s", "--retry-base", "1s", "--retry-max", "5m"}})
	zero := resource.MustParse("0")
	create(ctx, b, c, &v1alpha1.HermesPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: v1alpha1.HermesPolicySpec{
		ImageSelectors: []v1alpha1.ImageSelector{{ImageRegex: `/bench/`}}, Build: &v1alpha1.BuildSettings{MinLayerSize: &zero}}})
	time.Sleep(time.Second) // the policy is seen; its status is written once

	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var cwg sync.WaitGroup
	for w := 0; w < 32; w++ {
		cwg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= pods {
					return
				}
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("bench-%02d", i%namespaces), Name: fmt.Sprintf("pod-%05d", i)},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: refs[i%images]}}}}
				create(ctx, b, c, p)
			}
		})
	}
	cwg.Wait()
	created := time.Since(start)
	b.Logf("%d Pods created in %s", pods, created.Round(time.Millisecond))
	var st v1alpha1.HermesPolicyStatus
	for {
		var p v1alpha1.HermesPolicy
		if err := c.Get(ctx, client.ObjectKey{Name: "bench"}, &p); err == nil {
			st = p.Status
			if st.Counts.Ready == int32(images) && st.Counts.Total == int32(images) {
				break
			}
		}
		if ctx.Err() != nil {
			b.Fatalf("not all images ready: %+v", st.Counts)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ready := time.Since(start)
	b.StopTimer()

	metrics := ctl.Metrics(b)
	var api float64
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "rest_client_requests_total{") {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			api += v
		}
	}
	writes := harness.Metric(metrics, `hermes_controller_status_writes_total{result="ok"}`) + harness.Metric(metrics, `hermes_controller_status_writes_total{result="conflict"}`)
	fetches := 0
	for _, line := range strings.Split(origin.Output(), "\n") {
		if strings.Contains(line, `"GET /v2/bench/`) && strings.Contains(line, "/blobs/sha256:") && strings.Contains(line, `"hermes-controller"`) && strings.Contains(line, `" 200 `) {
			fetches++
		}
	}
	r := result{Pods: pods, Images: images, Namespaces: namespaces, CreateSeconds: created.Seconds(), ReadySeconds: ready.Seconds(),
		PeakRSSMiB: peakRSS(b, ctl.PID()), APIRequests: api, StatusWrites: writes, WritesPerImage: writes / float64(images),
		Builds: harness.Metric(metrics, `hermes_controller_builds_total{outcome="built"}`), OriginLayerFetchs: fetches}
	table := fmt.Sprintf(`hermes-controller at scale: %d Pods over %d images in %d namespaces, one policy, defaults
| measure | value | goal |
|---|---|---|
| Pods created (32 clients) | %.1f s | |
| first Pod create → every image Ready | %.1f s | < 60 s |
| controller peak RSS | %.0f MiB | < 300 MiB |
| API requests by the controller | %.0f | |
| status writes | %.0f (%.2f per image) | ≤ 2 per image |
| builds | %.0f | %d |
| blob GETs at the origin (layers and configs) | %d | |
`, pods, images, namespaces, r.CreateSeconds, r.ReadySeconds, r.PeakRSSMiB, r.APIRequests, r.StatusWrites, r.WritesPerImage, r.Builds, images, r.OriginLayerFetchs)
	harness.WriteBench(b, "controller", r, table)
}

// create creates obj, retrying what a busy API server answers (429, 5xx).
func create(ctx context.Context, b *testing.B, c client.Client, obj client.Object) {
	for attempt := 0; ; attempt++ {
		err := c.Create(ctx, obj)
		if err == nil || apierrors.IsAlreadyExists(err) {
			return
		}
		if attempt > 50 || !(apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsInternalError(err) || apierrors.IsNotFound(err)) {
			b.Fatalf("create %s: %v", obj.GetName(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// peakRSS reads VmHWM of a process, in MiB.
func peakRSS(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb / 1024
		}
	}
	return 0
}
