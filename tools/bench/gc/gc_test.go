package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/registry/cli"
	_ "github.com/hermes-oci/hermes/registry/drivers"
	"github.com/hermes-oci/hermes/tests/harness"
)

const (
	perRepo  = 50
	ownBlobs = 2
	blobSize = 4 << 10
	clients  = 8
	rate     = 400.0
	grace    = time.Second
	// The first collection starts this long after hermes-registry does:
	// the lookups before it are the baseline.
	firstRun = 20 * time.Second
)

// Goals.
const (
	goalSeconds  = 60.0
	goalMiB      = 256.0
	goalP99Ratio = 2.0
)

type result struct {
	Artifacts        int     `json:"artifacts"`
	Deleted          int     `json:"deleted_indexes"`
	Repositories     int     `json:"repositories"`
	PopulateSeconds  float64 `json:"populate_seconds"`
	GCSeconds        float64 `json:"gc_seconds"`
	BlobsDeleted     float64 `json:"blobs_deleted"`
	BytesDeleted     float64 `json:"bytes_deleted"`
	PeakRSSMiB       float64 `json:"peak_rss_mib"`
	PeakRSSBeforeMiB float64 `json:"peak_rss_before_gc_mib"`
	LookupsBefore    int     `json:"lookups_before"`
	LookupsDuring    int     `json:"lookups_during"`
	LookupErrors     int     `json:"lookup_errors"`
	P50BeforeMillis  float64 `json:"p50_before_ms"`
	P99BeforeMillis  float64 `json:"p99_before_ms"`
	P50DuringMillis  float64 `json:"p50_during_ms"`
	P99DuringMillis  float64 `json:"p99_during_ms"`
	P99Ratio         float64 `json:"p99_ratio"`
	Clients          int     `json:"clients"`
	Rate             float64 `json:"lookups_per_second"`
}

type artifact struct {
	repo    string
	subject digest.Digest
	index   digest.Digest
	deleted bool
}

// client speaks to one registry URL.
type client struct {
	url string
	c   *http.Client
}

func (c client) do(method, path, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, c.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (c client) blob(repo string, content []byte) (ocispec.Descriptor, error) {
	d := digest.FromBytes(content)
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: int64(len(content))}
	req, _ := http.NewRequest(http.MethodPost, c.url+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := c.c.Do(req)
	if err != nil {
		return desc, err
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		return desc, fmt.Errorf("start upload to %s: %s", repo, resp.Status)
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	code, body, err := c.do(http.MethodPut, strings.TrimPrefix(loc, c.url)+sep+"digest="+d.String(), "application/octet-stream", content)
	if err == nil && code != http.StatusCreated {
		err = fmt.Errorf("push blob to %s: %d %s", repo, code, body)
	}
	return desc, err
}

func (c client) manifest(repo, ref string, m any) (ocispec.Descriptor, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d := digest.FromBytes(b)
	if ref == "" {
		ref = d.String()
	}
	code, body, err := c.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, ocispec.MediaTypeImageManifest, b)
	if err == nil && code != http.StatusCreated {
		err = fmt.Errorf("put manifest %s:%s: %d %s", repo, ref, code, body)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(b))}, err
}

func filler(seed string) []byte {
	b := make([]byte, blobSize)
	r := rand.New(rand.NewPCG(uint64(len(seed)), uint64(digest.FromString(seed).Encoded()[0])))
	copy(b, seed)
	for i := len(seed); i < len(b); i++ {
		b[i] = byte(r.UintN(256))
	}
	return b
}

// populate writes the cache through the registry library and deletes
// every other index through its API.
func populate(b *testing.B, root string, n int) []artifact {
	reg, err := registry.New(context.Background(), registry.Config{
		Storage: registry.FilesystemStorage(root), Auth: registry.AuthConfig{AnonymousWrites: true},
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer func() { srv.Close(); reg.Close() }()
	c := client{url: srv.URL, c: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	repos := (n + perRepo - 1) / perRepo
	arts := make([]artifact, n)
	var wg sync.WaitGroup
	errs := make(chan error, repos)
	sem := make(chan struct{}, 8)
	for r := range repos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- populateRepo(c, r, arts, n)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return arts
}

func populateRepo(c client, r int, arts []artifact, n int) error {
	repo := fmt.Sprintf("bench.local/team%02d/app%03d", r%10, r)
	cfg, err := c.blob(repo, []byte("{}"))
	if err != nil {
		return err
	}
	cfg.MediaType = "application/vnd.oci.empty.v1+json"
	shared, err := c.blob(repo, filler(repo+" shared zTOC"))
	if err != nil {
		return err
	}
	for j := range perRepo {
		i := r*perRepo + j
		if i >= n {
			return nil
		}
		// The mirrored image manifest: its config and layers live upstream.
		image, err := c.manifest(repo, fmt.Sprintf("v%d", j), map[string]any{
			"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest,
			"config": ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString(fmt.Sprint("config ", i)), Size: 1000},
			"layers": []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString(fmt.Sprint("layer ", i)), Size: 1 << 20}},
		})
		if err != nil {
			return err
		}
		layers := []ocispec.Descriptor{shared}
		for k := range ownBlobs {
			d, err := c.blob(repo, filler(fmt.Sprintf("%s artifact %d zTOC %d", repo, i, k)))
			if err != nil {
				return err
			}
			layers = append(layers, d)
		}
		index, err := c.manifest(repo, "", map[string]any{
			"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest, "artifactType": artifacts.SOCIIndexV1,
			"config": cfg, "layers": layers, "subject": image,
			"annotations": map[string]string{artifacts.AnnotationCreated: "2026-01-01T00:00:00Z"},
		})
		if err != nil {
			return err
		}
		a := artifact{repo: repo, subject: image.Digest, index: index.Digest, deleted: i%2 == 0}
		if a.deleted {
			if code, body, err := c.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+index.Digest.String(), "", nil); err != nil || code != http.StatusAccepted {
				return fmt.Errorf("delete %s@%s: %d %s %v", repo, index.Digest, code, body, err)
			}
		}
		arts[i] = a
	}
	return nil
}

type sample struct {
	at  time.Time
	lat time.Duration
}

// lookups sends Referrers API lookups for random artifacts' subjects from
// clients goroutines paced at rate per second until stop is closed;
// latency counts from the scheduled send time.
func lookups(url string, arts []artifact, stop <-chan struct{}) ([]sample, int) {
	transport := &http.Transport{MaxIdleConnsPerHost: clients * 2}
	defer transport.CloseIdleConnections()
	c := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	interval := time.Duration(float64(clients) / rate * float64(time.Second))
	start := time.Now()
	var mu sync.Mutex
	var all []sample
	errs := 0
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			next := start.Add(time.Duration(i) * interval / clients)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				t0 := next
				next = next.Add(interval)
				a := arts[r.IntN(len(arts))]
				resp, err := c.Get(url + "/v2/" + a.repo + "/referrers/" + a.subject.String())
				ok := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					var ix ocispec.Index
					ok = ok && json.NewDecoder(resp.Body).Decode(&ix) == nil && len(ix.Manifests) == map[bool]int{true: 0, false: 1}[a.deleted]
					resp.Body.Close()
				}
				mu.Lock()
				all = append(all, sample{t0, time.Since(t0)})
				if !ok {
					errs++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return all, errs
}

func percentile(s []sample, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	l := make([]time.Duration, len(s))
	for i, x := range s {
		l[i] = x.lat
	}
	slices.Sort(l)
	return float64(l[min(len(l)-1, int(p*float64(len(l))))].Microseconds()) / 1000
}

func metric(exposition, series string) float64 {
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
				return v
			}
		}
	}
	return -1
}

func TestMain(m *testing.M) {
	// distribution logs every request of the in-process registry.
	cli.RouteLibraryLogs(slog.DiscardHandler)
	os.Exit(m.Run())
}

func BenchmarkGC(b *testing.B) {
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("HERMES_BENCH_GC_ARTIFACTS")); err == nil && v > 1 {
		n = v
	}
	var res result
	for range b.N {
		res = run(b, n)
	}
	b.ReportMetric(res.GCSeconds, "gc-s")
	b.ReportMetric(res.PeakRSSMiB, "peak-MiB")
	b.ReportMetric(res.P99Ratio, "p99-ratio")
	writeResults(b, res)
}

func run(b *testing.B, n int) result {
	root := harness.TempDir(b, "gc-bench")
	t0 := time.Now()
	arts := populate(b, root, n)
	res := result{Artifacts: n, Deleted: (n + 1) / 2, Repositories: (n + perRepo - 1) / perRepo, PopulateSeconds: time.Since(t0).Seconds(),
		Clients: clients, Rate: rate}
	time.Sleep(grace) // everything written is older than the grace
	reg := harness.StartHermesRegistry(b, harness.HermesRegistryOptions{Root: root, LogLevel: "warn",
		Args: []string{"--blob-gc-interval", firstRun.String(), "--blob-gc-grace", grace.String()}})
	started := time.Now()

	stop := make(chan struct{})
	var samples []sample
	done := make(chan struct{})
	go func() {
		defer close(done)
		samples, res.LookupErrors = lookups(reg.URL, arts, stop)
	}()
	var m string
	harness.WaitFor(b, reg.Process, firstRun+5*time.Minute, "the first collection", func() error {
		m = reg.Metrics(b)
		if metric(m, `hermes_registry_gc_runs_total{result="success"}`) >= 1 {
			return nil
		}
		if metric(m, `hermes_registry_gc_runs_total{result="error"}`) >= 1 {
			b.Fatalf("collection failed:\n%s", reg.Output())
		}
		if time.Since(started) < firstRun-2*time.Second {
			res.PeakRSSBeforeMiB = harness.PeakRSS(b, reg.PID())
		}
		return fmt.Errorf("not yet")
	})
	time.Sleep(time.Second)
	close(stop)
	<-done
	res.PeakRSSMiB = harness.PeakRSS(b, reg.PID())
	res.GCSeconds = metric(m, "hermes_registry_gc_duration_seconds_sum")
	res.BlobsDeleted = metric(m, "hermes_registry_gc_blobs_deleted_total")
	res.BytesDeleted = metric(m, "hermes_registry_gc_bytes_deleted_total")
	end := time.Unix(0, int64(metric(m, "hermes_registry_gc_last_success_timestamp_seconds")*1e9))
	gcStart := end.Add(-time.Duration(res.GCSeconds * float64(time.Second)))
	var before, during []sample
	for _, s := range samples {
		switch {
		case s.at.After(started.Add(3*time.Second)) && s.at.Before(gcStart.Add(-500*time.Millisecond)):
			before = append(before, s) // after a warm-up, well before the run
		case !s.at.Before(gcStart) && !s.at.After(end):
			during = append(during, s)
		}
	}
	res.LookupsBefore, res.LookupsDuring = len(before), len(during)
	res.P50BeforeMillis, res.P99BeforeMillis = percentile(before, .50), percentile(before, .99)
	res.P50DuringMillis, res.P99DuringMillis = percentile(during, .50), percentile(during, .99)
	if res.P99BeforeMillis > 0 {
		res.P99Ratio = res.P99DuringMillis / res.P99BeforeMillis
	}
	// What the collection must have removed: each deleted index's manifest
	// and its two own zTOCs.
	if want := float64(res.Deleted * (1 + ownBlobs)); res.BlobsDeleted != want {
		b.Errorf("%v blobs deleted, want %v", res.BlobsDeleted, want)
	}
	if res.LookupErrors > 0 {
		b.Errorf("%d lookups failed or answered wrong", res.LookupErrors)
	}
	if len(during) < 20 {
		b.Errorf("only %d lookups during the collection: too short to measure", len(during))
	}
	return res
}

func writeResults(b *testing.B, r result) {
	var t strings.Builder
	fmt.Fprintf(&t, "Online garbage collection of the Hermes cache registry: %d artifacts in %d repositories, %d indexes deleted\n", r.Artifacts, r.Repositories, r.Deleted)
	fmt.Fprintf(&t, "(cache written in %.1f s through the registry library; hermes-registry as its own process; Referrers lookups by %d clients paced at %.0f/s)\n\n", r.PopulateSeconds, r.Clients, r.Rate)
	fmt.Fprintf(&t, "%-44s %12s %12s\n", "", "measured", "goal")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Fprintf(&t, "%-44s %10.2f s %10.0f s  %s\n", "collection time", r.GCSeconds, goalSeconds, verdict(r.GCSeconds < goalSeconds))
	fmt.Fprintf(&t, "%-44s %8.1f MiB %8.0f MiB  %s\n", "registry peak RSS (VmHWM) after it", r.PeakRSSMiB, goalMiB, verdict(r.PeakRSSMiB < goalMiB))
	fmt.Fprintf(&t, "%-44s %12.2f %12.0f  %s\n", "p99 referrers lookup during ÷ before", r.P99Ratio, goalP99Ratio, verdict(r.P99Ratio <= goalP99Ratio))
	fmt.Fprintf(&t, "\n%-44s %8.1f MiB\n", "peak RSS before the collection", r.PeakRSSBeforeMiB)
	fmt.Fprintf(&t, "%-44s %10.0f (%.1f MiB)\n", "blobs deleted", r.BlobsDeleted, r.BytesDeleted/(1<<20))
	fmt.Fprintf(&t, "%-44s %6d lookups, p50 %.2f ms, p99 %.2f ms\n", "before the collection", r.LookupsBefore, r.P50BeforeMillis, r.P99BeforeMillis)
	fmt.Fprintf(&t, "%-44s %6d lookups, p50 %.2f ms, p99 %.2f ms\n", "during the collection", r.LookupsDuring, r.P50DuringMillis, r.P99DuringMillis)
	fmt.Fprintf(&t, "%-44s %6d\n", "lookup errors or wrong answers", r.LookupErrors)
	harness.WriteBench(b, "gc", map[string]any{"benchmark": "gc", "time": time.Now().UTC(), "result": r}, t.String())
}
