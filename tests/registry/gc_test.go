package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// gcArgs run garbage collection every interval with the given grace: the
// defaults are an hour each, tests opt in to seconds.
func gcArgs(interval, grace time.Duration) []string {
	return []string{"--blob-gc-interval", interval.String(), "--blob-gc-grace", grace.String()}
}

// gcImage is a small image: a base layer shared by every image (seed 1)
// and one of its own.
func gcImage(t *testing.T, own int64) imagegen.Spec {
	t.Helper()
	return imagegen.Spec{Layers: []imagegen.Layer{
		{Kind: imagegen.Random, Size: 192 << 10, Seed: 1},
		{Kind: imagegen.Random, Size: 128 << 10, Seed: 100 + own},
	}}
}

// buildImage pushes spec to the origin as ref and builds its index into
// cache, retrying what the builder calls retryable as the controller does.
func buildImage(t *testing.T, b *builder.Builder, ref string, spec imagegen.Spec) builder.PlatformResult {
	t.Helper()
	img, err := imagegen.Image(spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := imagegen.Push(ctx, ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	settings := builder.DefaultSettings()
	settings.MinLayerSize = 0
	for attempt := 1; ; attempt++ {
		res, err := b.Build(ctx, builder.Request{Image: ref, Settings: settings})
		if err == nil {
			if len(res.Platforms) != 1 || res.Platforms[0].Index == nil {
				t.Fatalf("build %s: %+v", ref, res)
			}
			return res.Platforms[0]
		}
		if !builder.Retryable(err) || attempt == 5 {
			t.Fatalf("build %s, attempt %d: %v", ref, attempt, err)
		}
		t.Logf("build %s, attempt %d: %v; retrying", ref, attempt, err)
		time.Sleep(200 * time.Millisecond)
	}
}

// indexBlobs returns the blobs an index manifest in repo names, fetched
// through the registry.
func indexBlobs(t *testing.T, reg *harness.HermesRegistry, repo string, index digest.Digest) []ocispec.Descriptor {
	t.Helper()
	var m ocispec.Manifest
	resp, body := getManifest(t, reg, repo, index.String())
	if resp != http.StatusOK {
		t.Fatalf("index %s in %s: %d %s", index, repo, resp, body)
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	return append(m.Layers, m.Config)
}

func getManifest(t *testing.T, reg *harness.HermesRegistry, repo, ref string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/"+repo+"/manifests/"+ref, nil)
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest+","+ocispec.MediaTypeImageIndex)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// blobStatus fetches a blob and checks its content against its digest.
func blobStatus(t *testing.T, reg *harness.HermesRegistry, repo string, d digest.Digest) int {
	t.Helper()
	resp, err := http.Get(reg.URL + "/v2/" + repo + "/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && digest.FromBytes(b) != d {
		t.Errorf("blob %s in %s: content does not match", d, repo)
	}
	return resp.StatusCode
}

// diskUsage sums the sizes of the files below root.
func diskUsage(t *testing.T, root string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if fi, err := d.Info(); err == nil && !d.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// catalogRecord returns the catalog record of layer (there is one per
// layer and settings here).
func catalogRecord(t *testing.T, reg *harness.HermesRegistry, layer digest.Digest) ocispec.Descriptor {
	t.Helper()
	recs := listReferrers(t, reg.URL, artifacts.ZtocCatalog, layer, "")
	if len(recs) != 1 {
		t.Fatalf("catalog records of %s: %v", layer, recs)
	}
	return recs[0]
}

// TestGCReclaimsDeletedIndex deletes one image's index and its exclusive
// zTOC's catalog record, as the controller does for an image no longer
// wanted: after a collection their blobs are gone and the registry's disk
// usage dropped by at least their bytes, while the other image's index,
// the shared zTOC (still referenced by it and the catalog) and both
// mirrored image manifests stay, every blob of every remaining index
// included. A half-written upload is gone after the grace. On filesystem
// and on S3 storage.
func TestGCReclaimsDeletedIndex(t *testing.T) {
	for _, storage := range []string{"filesystem", "s3"} {
		t.Run(storage, func(t *testing.T) { testGCReclaims(t, storage) })
	}
}

func testGCReclaims(t *testing.T, storage string) {
	const grace = 2 * time.Second
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	opts := harness.HermesRegistryOptions{Args: gcArgs(time.Second, grace), ReferrersCacheTTL: 200 * time.Millisecond}
	if storage == "s3" {
		opts.StorageConfig = harness.StartS3(t)
	}
	reg := harness.StartHermesRegistry(t, opts)
	b, err := builder.New(builder.Config{CacheHost: reg.Host, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	a := buildImage(t, b, origin.Host+"/gc/a:v1", gcImage(t, 1))
	other := buildImage(t, b, origin.Host+"/gc/b:v1", gcImage(t, 2))
	repoA, repoB := "127.0.0.1_"+strings.Split(origin.Host, ":")[1]+"/gc/a", "127.0.0.1_"+strings.Split(origin.Host, ":")[1]+"/gc/b"

	// An upload started, a few bytes sent, never finished.
	resp, _, _ := call(t, reg, http.MethodPost, "/v2/"+repoA+"/blobs/uploads/", "", nil)
	upload := resp.Header.Get("Location")
	if resp, body, _ := call(t, reg, http.MethodPatch, upload, "application/octet-stream", []byte("half a blob")); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH upload: %s %s", resp.Status, body)
	}
	upload = resp.Header.Get("Location")

	ownLayer := a.Layers[1].Digest
	sharedLayer := a.Layers[0].Digest
	record := catalogRecord(t, reg, ownLayer)
	aBlobs := indexBlobs(t, reg, repoA, a.Index.Digest)
	bBlobs := indexBlobs(t, reg, repoB, other.Index.Digest)
	inB := map[digest.Digest]bool{}
	for _, d := range bBlobs {
		inB[d.Digest] = true
	}
	// Exclusive: a's index and record manifests, and a's zTOC of its own
	// layer; the config (empty JSON) and the shared zTOC are b's too.
	exclusive := map[digest.Digest]int64{a.Index.Digest: a.Index.Size, record.Digest: record.Size}
	for _, d := range aBlobs {
		if !inB[d.Digest] {
			exclusive[d.Digest] = d.Size
		}
	}
	if len(exclusive) != 3 {
		t.Fatalf("exclusive blobs of a: %v; want its index, record and own zTOC", exclusive)
	}
	var exclusiveBytes int64
	for _, n := range exclusive {
		exclusiveBytes += n
	}

	// Let collections pass over the live state: they must remove nothing
	// the builds left (the registry's own uploads are done), then measure.
	time.Sleep(grace + 2*time.Second)
	if storage == "filesystem" {
		before := diskUsage(t, reg.Root)
		defer func() {
			after := diskUsage(t, reg.Root)
			t.Logf("disk usage %d -> %d bytes (%d), exclusive blobs %d bytes", before, after, before-after, exclusiveBytes)
			if before-after < exclusiveBytes {
				t.Errorf("disk usage dropped by %d bytes, less than the %d bytes of a's exclusive blobs", before-after, exclusiveBytes)
			}
		}()
	}
	for repo, d := range map[string]digest.Digest{repoA: a.Index.Digest, artifacts.ZtocCatalog: record.Digest} {
		if resp, body, _ := call(t, reg, http.MethodDelete, "/v2/"+repo+"/manifests/"+d.String(), "", nil); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("DELETE %s@%s: %s %s", repo, d, resp.Status, body)
		}
	}
	// Reading a blob counts as using it (a pusher's HEAD before skipping
	// the upload), which keeps it for the grace: watch the metrics.
	harness.WaitFor(t, reg.Process, 30*time.Second, "a's exclusive blobs to be collected", func() error {
		if n := metricValue(t, reg.Metrics(t), "hermes_registry_gc_blobs_deleted_total"); n < float64(len(exclusive)) {
			return fmt.Errorf("%v blobs deleted", n)
		}
		return nil
	})
	if n := metricValue(t, reg.Metrics(t), "hermes_registry_gc_blobs_deleted_total"); n != float64(len(exclusive)) {
		t.Errorf("%v blobs deleted; want a's %d exclusive ones", n, len(exclusive))
	}
	for d := range exclusive {
		if code := blobStatus(t, reg, repoA, d); code != http.StatusNotFound {
			t.Errorf("exclusive blob %s: %d after GC", d, code)
		}
	}
	// What stays: b's index and every blob of it, the shared zTOC in a's
	// repository too (a's repository keeps its link while the blob lives),
	// the catalog record of the shared layer and its zTOC, both mirrored
	// image manifests and tags.
	for _, d := range bBlobs {
		if code := blobStatus(t, reg, repoB, d.Digest); code != http.StatusOK {
			t.Errorf("blob %s of b's index: %d", d.Digest, code)
		}
	}
	shared := catalogRecord(t, reg, sharedLayer)
	for _, d := range indexBlobs(t, reg, artifacts.ZtocCatalog, shared.Digest) {
		if code := blobStatus(t, reg, artifacts.ZtocCatalog, d.Digest); code != http.StatusOK {
			t.Errorf("blob %s of the shared zTOC's record: %d", d.Digest, code)
		}
	}
	if got := listReferrers(t, reg.URL, repoB, other.Manifest.Digest, ""); len(got) != 1 || got[0].Digest != other.Index.Digest {
		t.Errorf("b's referrers %v; want its index", got)
	}
	if got := listReferrers(t, reg.URL, repoA, a.Manifest.Digest, ""); len(got) != 0 {
		t.Errorf("a's referrers %v; want none", got)
	}
	{
		crane := harness.Bin(t, "crane")
		for _, ref := range []string{reg.Host + "/" + repoA + ":v1", reg.Host + "/" + repoB + ":v1", reg.Host + "/" + repoA + "@" + a.Manifest.Digest.String()} {
			if out := runEnv(t, nil, crane, "manifest", "--insecure", ref); !strings.Contains(out, "layers") {
				t.Errorf("crane manifest %s: %s", ref, out)
			}
		}
		oras := harness.Bin(t, "oras")
		if out := runEnv(t, nil, oras, "discover", "--plain-http", "--format", "json", reg.Host+"/"+repoB+"@"+other.Manifest.Digest.String()); !strings.Contains(out, other.Index.Digest.String()) {
			t.Errorf("oras discover b: %s lacks the index", out)
		}
	}
	if resp, _, code := call(t, reg, http.MethodGet, upload, "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("abandoned upload: %s %s; want 404 after the grace", resp.Status, code)
	}
	m := reg.Metrics(t)
	for _, want := range []string{"hermes_registry_gc_blobs_deleted_total", "hermes_registry_gc_bytes_deleted_total", "hermes_registry_gc_uploads_deleted_total 1", "hermes_registry_gc_last_success_timestamp_seconds", `hermes_registry_gc_runs_total{result="error"} 0`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if n := metricValue(t, m, "hermes_registry_gc_blobs_deleted_total"); n < 3 {
		t.Errorf("gc_blobs_deleted_total %v; want at least a's 3 exclusive blobs", n)
	}
	if log := reg.Output(); !strings.Contains(log, "deleted blob") || !strings.Contains(log, "no live manifest") {
		t.Errorf("the log does not say what was deleted and why")
	}
}

// waitGCRuns waits for n more successful collections.
func waitGCRuns(t *testing.T, reg *harness.HermesRegistry, n float64) {
	t.Helper()
	start := metricValue(t, reg.Metrics(t), `hermes_registry_gc_runs_total{result="success"}`)
	harness.WaitFor(t, reg.Process, 30*time.Second, "garbage collection runs", func() error {
		if got := metricValue(t, reg.Metrics(t), `hermes_registry_gc_runs_total{result="success"}`); got < start+n {
			return fmt.Errorf("%v of %v runs", got-start, n)
		}
		return nil
	})
}

// metricValue is the value of the sample named exactly series (name and
// labels) in a Prometheus exposition; -1 if absent.
func metricValue(t *testing.T, exposition, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// TestGCDuringPushes runs collections in a tight loop (every 200ms, a
// grace of one second) while 20 builds push: afterwards every index's
// blobs are present, every build is found through the Referrers API, and
// still after later collections.
func TestGCDuringPushes(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{Args: gcArgs(200*time.Millisecond, time.Second), LogLevel: "error"})
	b, err := builder.New(builder.Config{CacheHost: reg.Host, TempDir: t.TempDir(), Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	runs0 := metricValue(t, reg.Metrics(t), `hermes_registry_gc_runs_total{result="success"}`)
	results := make([]builder.PlatformResult, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = buildImage(t, b, fmt.Sprintf("%s/gc/push%02d:v1", origin.Host, i), gcImage(t, int64(i)))
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if runs := metricValue(t, reg.Metrics(t), `hermes_registry_gc_runs_total{result="success"}`) - runs0; runs < 3 {
		t.Errorf("%v collections ran during the builds; want several", runs)
	}
	check := func(when string) {
		for i, r := range results {
			repo := fmt.Sprintf("127.0.0.1_%s/gc/push%02d", strings.Split(origin.Host, ":")[1], i)
			got := listReferrers(t, reg.URL, repo, r.Manifest.Digest, "?artifactType="+artifacts.SOCIIndexV1)
			if len(got) != 1 || got[0].Digest != r.Index.Digest {
				t.Errorf("%s: build %d: referrers %v, want its index %s", when, i, got, r.Index.Digest)
				continue
			}
			for _, d := range indexBlobs(t, reg, repo, r.Index.Digest) {
				if code := blobStatus(t, reg, repo, d.Digest); code != http.StatusOK {
					t.Errorf("%s: build %d: blob %s: %d", when, i, d.Digest, code)
				}
			}
		}
	}
	check("right after the builds")
	time.Sleep(1500 * time.Millisecond) // past the grace: only references protect now
	waitGCRuns(t, reg, 2)
	check("after the grace")
	if metricValue(t, reg.Metrics(t), `hermes_registry_gc_runs_total{result="error"}`) != 0 {
		t.Errorf("a collection failed:\n%s", reg.Output())
	}
}
