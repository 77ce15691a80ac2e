// Package registry benchmarks the Hermes cache registry's Referrers API:
// lookups per second and latency percentiles with concurrent clients on
// loopback, side by side with
//
//   - manifest GETs on the same hermes-registry (distribution's own path);
//   - distribution's stock registry (v3.1.2, no Referrers API) answering the
//     referrers tag-schema lookup (GET /v2/<name>/manifests/sha256-<hex>)
//     that clients fall back to without the API;
//   - hermes-registry answering for a subject with no referrers (what
//     nodes ask for images without an index).
//
// Every lookup is an HTTP request over a kept-alive connection, answered
// in full (body read). The goal on the 2-core box: ≥ 5000 referrers
// lookups/s at p99 ≤ 5 ms with 16 clients. The load generator shares the
// machine with the server, as it does in the test.
//
//	cd tools && go test -run '^$' -bench Registry -benchtime 1x ./bench/registry
//
// Settings (environment): HERMES_BENCH_REGISTRY_CLIENTS (default 16),
// HERMES_BENCH_REGISTRY_DURATION (per case, default 5s).
// Results: $HERMES_BENCH_OUT/registry.json and registry.txt (default
// <repo>/.bench).
package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
)

// result is one case's numbers.
type result struct {
	Case       string  `json:"case"`
	Server     string  `json:"server"`
	Mode       string  `json:"mode"`
	Clients    int     `json:"clients"`
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"requests_per_second"`
	P50Millis  float64 `json:"p50_ms"`
	P90Millis  float64 `json:"p90_ms"`
	P99Millis  float64 `json:"p99_ms"`
	MaxMillis  float64 `json:"max_ms"`
	BodyBytes  int     `json:"body_bytes"`
	GoalPerSec float64 `json:"goal_requests_per_second,omitempty"`
	GoalP99    float64 `json:"goal_p99_ms,omitempty"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// startStockRegistry runs distribution's registry quietly (no access log,
// warnings only), as hermes-registry runs: logging every request would
// cost it time hermes-registry does not spend.
func startStockRegistry(b *testing.B) string {
	bin := harness.Bin(b, "registry")
	dir := harness.TempDir(b, "stock")
	port := harness.FreePort(b)
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%d\n",
		filepath.Join(dir, "storage"), port)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	p := harness.Start(b, "stock-registry", dir, bin, []string{"serve", filepath.Join(dir, "config.yml")}, "OTEL_TRACES_EXPORTER=none")
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	harness.WaitFor(b, p, 15*time.Second, "stock registry", harness.HTTPReady(url+"/v2/"))
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// pushIndex pushes a SOCI-index-like referrer of subject to host/repo;
// with tagSchema, the way clients do without a Referrers API (oras-go then
// maintains the sha256-<hex> tag).
func pushIndex(b *testing.B, host, repo string, subject ocispec.Descriptor, tagSchema bool) ocispec.Descriptor {
	r, err := remote.NewRepository(host + "/" + repo)
	if err != nil {
		b.Fatal(err)
	}
	r.PlainHTTP = true
	if tagSchema {
		if err := r.SetReferrersCapability(false); err != nil {
			b.Fatal(err)
		}
	}
	desc, err := oras.PackManifest(context.Background(), r, oras.PackManifestVersion1_1, artifacts.SOCIIndexV1,
		oras.PackManifestOptions{Subject: &subject, ManifestAnnotations: map[string]string{"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}})
	if err != nil {
		b.Fatal(err)
	}
	return desc
}

// getter returns a function that GETs url in full over kept-alive
// connections, and a cleanup.
func getter(url, accept string, clients int) (func() (int, error), func()) {
	transport := &http.Transport{MaxIdleConns: clients * 2, MaxIdleConnsPerHost: clients * 2, DisableCompression: true}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	return func() (int, error) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s", resp.Status)
		}
		return int(n), err
	}, transport.CloseIdleConnections
}

// load measures GETs of url from clients goroutines for d. With rate 0
// each client sends its next request when the last is answered (closed
// loop: the throughput the server sustains). With a rate, the clients
// together send rate requests per second on a fixed schedule, and latency
// counts from the scheduled time, so a stalled server is charged for the
// requests it delayed (no coordinated omission).
func load(b *testing.B, name, server, url, accept string, clients int, rate float64, d time.Duration) result {
	get, done := getter(url, accept, clients)
	defer done()
	body, err := get()
	if err != nil {
		b.Fatalf("%s: %s: %v", name, url, err)
	}
	// Warm up: connections, caches.
	warm := time.Now().Add(d / 5)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(warm) {
				_, _ = get()
			}
		}()
	}
	wg.Wait()

	lat := make([][]time.Duration, clients)
	errs := make([]int, clients)
	start := time.Now()
	end := start.Add(d)
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(clients) / rate * float64(time.Second))
	}
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(time.Duration(i) * interval / time.Duration(clients))
			for {
				t0 := time.Now()
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					t0, next = next, next.Add(interval)
				}
				if !t0.Before(end) {
					return
				}
				if _, err := get(); err != nil {
					errs[i]++
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	errors := 0
	for i := range clients {
		all = append(all, lat[i]...)
		errors += errs[i]
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
	}
	mode := "closed loop"
	if rate > 0 {
		mode = fmt.Sprintf("paced at %.0f/s", rate)
	}
	return result{
		Case: name, Server: server, Mode: mode, Clients: clients, Requests: len(all), Errors: errors,
		Seconds: elapsed.Seconds(), PerSecond: float64(len(all)) / elapsed.Seconds(),
		P50Millis: pct(.50), P90Millis: pct(.90), P99Millis: pct(.99), MaxMillis: pct(1), BodyBytes: body,
	}
}

// The goal for referrers lookups on the 2-core box.
const (
	goalRate = 5000.0
	goalP99  = 5.0
)

func BenchmarkRegistry(b *testing.B) {
	clients := envInt("HERMES_BENCH_REGISTRY_CLIENTS", 16)
	d := envDuration("HERMES_BENCH_REGISTRY_DURATION", 5*time.Second)
	hermes := harness.StartHermesRegistry(b, harness.HermesRegistryOptions{LogLevel: "warn"})
	stock := startStockRegistry(b)

	const repo = "docker.io/library/nginx"
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("nginx:1.27 linux/amd64"), Size: 1234}
	idx := pushIndex(b, hermes.Host, repo, subject, false)
	pushIndex(b, stock, repo, subject, true)
	none := digest.FromString("an image without an index")
	soci := "?artifactType=" + strings.ReplaceAll(artifacts.SOCIIndexV1, "+", "%2B")

	referrersURL := hermes.URL + "/v2/" + repo + "/referrers/" + subject.Digest.String() + soci
	tagSchemaURL := "http://" + stock + "/v2/" + repo + "/manifests/" + strings.Replace(subject.Digest.String(), ":", "-", 1)
	var results []result
	for i := 0; i < b.N; i++ {
		results = []result{
			// The goal: 5000 lookups/s with p99 <= 5 ms.
			load(b, "referrers lookup (Referrers API)", "hermes-registry", referrersURL, "", clients, goalRate, d),
			load(b, "tag-schema lookup (GET manifests/sha256-<hex>)", "distribution registry v3.1.2", tagSchemaURL, ocispec.MediaTypeImageIndex, clients, goalRate, d),
			// What each sustains.
			load(b, "referrers lookup (Referrers API)", "hermes-registry", referrersURL, "", clients, 0, d),
			load(b, "referrers lookup, no referrers", "hermes-registry",
				hermes.URL+"/v2/"+repo+"/referrers/"+none.String()+soci, "", clients, 0, d),
			load(b, "manifest GET by digest", "hermes-registry",
				hermes.URL+"/v2/"+repo+"/manifests/"+idx.Digest.String(), ocispec.MediaTypeImageManifest, clients, 0, d),
			load(b, "tag-schema lookup (GET manifests/sha256-<hex>)", "distribution registry v3.1.2", tagSchemaURL, ocispec.MediaTypeImageIndex, clients, 0, d),
		}
	}
	results[0].GoalPerSec, results[0].GoalP99 = goalRate, goalP99
	for _, r := range results {
		if r.Errors > 0 {
			b.Errorf("%s: %d errors", r.Case, r.Errors)
		}
	}
	b.ReportMetric(results[2].PerSecond, "lookups/s")
	b.ReportMetric(results[0].P99Millis, "p99-ms@5000/s")
	writeResults(b, results)
}

func writeResults(b *testing.B, results []result) {
	var t strings.Builder
	fmt.Fprintf(&t, "Hermes cache registry: lookups with %d concurrent clients on loopback (%s per case)\n\n", results[0].Clients, time.Duration(results[0].Seconds*float64(time.Second)).Round(time.Second))
	fmt.Fprintf(&t, "%-47s %-29s %-17s %8s %7s %7s %7s %7s %6s\n", "case", "server", "load", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors")
	for _, r := range results {
		fmt.Fprintf(&t, "%-47s %-29s %-17s %8.0f %7.2f %7.2f %7.2f %7.2f %6d\n", r.Case, r.Server, r.Mode, r.PerSecond, r.P50Millis, r.P90Millis, r.P99Millis, r.MaxMillis, r.Errors)
	}
	paced, sustained := results[0], results[2]
	verdict := "met"
	if paced.PerSecond < 0.98*goalRate || sustained.PerSecond < goalRate || paced.P99Millis > goalP99 {
		verdict = "NOT met"
	}
	fmt.Fprintf(&t, "\ngoal: >= %.0f referrers lookups/s at p99 <= %.0f ms: %s (sustains %.0f/s; at %.0f/s p99 %.2f ms)\n",
		goalRate, goalP99, verdict, sustained.PerSecond, paced.PerSecond, paced.P99Millis)
	harness.WriteBench(b, "registry", map[string]any{"benchmark": "registry", "time": time.Now().UTC(), "results": results}, t.String())
}
