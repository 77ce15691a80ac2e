package registry_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/artifacts"
)

// TestGarbageCollection deletes an index and collects: its exclusive
// blobs, an orphan manifest and an abandoned upload go; what other indexes,
// the zTOC catalog and tags still reference stays; what was written or
// used within the grace period stays.
func TestGarbageCollection(t *testing.T) {
	// Filesystem storage, to measure the disk; the in-memory driver cannot
	// list /hermes/v1/repositories once a repository named hermes/... exists
	// (distribution v3.1.2), and collection refuses to run over it then.
	testGarbageCollection(t, "filesystem")
}

func testGarbageCollection(t *testing.T, storage string) {
	const grace = 300 * time.Millisecond
	cfg := registry.Config{Auth: anonymousWrites, GC: registry.GCConfig{Interval: time.Hour, Grace: grace}}
	root := t.TempDir()
	if storage == "filesystem" {
		cfg.Storage = registry.FilesystemStorage(root)
	}
	s := newServerWith(t, cfg)
	ctx := context.Background()
	const a, b, catalog = "127.0.0.1_5000/team/a", "127.0.0.1_5000/team/b", artifacts.ZtocCatalog

	// A mirrored image, tagged, and its SOCI index with an exclusive zTOC
	// and one shared with another image's index and the catalog.
	image := imageManifest(t, ocispec.MediaTypeImageManifest, "a", nil)
	if resp := s.putManifest(t, a, "v1", image); resp.StatusCode != http.StatusCreated {
		t.Fatalf("put image: %s %s", resp.Status, readAll(t, resp))
	}
	imageDigest := digest.FromBytes(image)
	exclusive, shared := []byte("zTOC only image a has"), []byte("zTOC of a shared base layer")
	index := func(repo string, subject digest.Digest, layers ...[]byte) digest.Digest {
		descs := []ocispec.Descriptor{}
		for _, l := range layers {
			descs = append(descs, ocispec.Descriptor{MediaType: "application/octet-stream", Digest: s.pushBlob(t, repo, l), Size: int64(len(l))})
		}
		cfg := s.pushBlob(t, repo, emptyJSON)
		body, _ := json.Marshal(map[string]any{
			"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest, "artifactType": artifacts.SOCIIndexV1,
			"config":  ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: cfg, Size: 2},
			"layers":  descs,
			"subject": ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subject, Size: 1},
		})
		d := digest.FromBytes(body)
		if resp := s.putManifest(t, repo, d.String(), body); resp.StatusCode != http.StatusCreated {
			t.Fatalf("put index: %s %s", resp.Status, readAll(t, resp))
		}
		return d
	}
	gone := index(a, imageDigest, exclusive, shared)
	kept := index(b, digest.FromString("upstream manifest of b"), []byte("zTOC only image b has"), shared)
	record := index(catalog, digest.FromString("base layer"), shared)
	// An untagged manifest nothing names, with a blob of its own.
	orphanBlob := []byte("blob only an orphan names")
	orphanBody, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest,
		"config": ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: s.pushBlob(t, a, emptyJSON), Size: 2},
		"layers": []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: s.pushBlob(t, a, orphanBlob), Size: int64(len(orphanBlob))}}})
	orphan := digest.FromBytes(orphanBody)
	if resp := s.putManifest(t, a, orphan.String(), orphanBody); resp.StatusCode != http.StatusCreated {
		t.Fatalf("put orphan: %s %s", resp.Status, readAll(t, resp))
	}
	// An upload started and abandoned.
	resp := s.do(t, http.MethodPost, "/v2/"+a+"/blobs/uploads/", nil)
	upload := strings.TrimPrefix(resp.Header.Get("Location"), s.URL)
	// A blob nothing names yet, which a push will HEAD during the run.
	inFlight := []byte("blob a push found here and did not upload again")
	inFlightDigest := s.pushBlob(t, a, inFlight)

	if resp := s.do(t, http.MethodDelete, "/v2/"+a+"/manifests/"+gone.String(), nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete index: %s %s", resp.Status, readAll(t, resp))
	}
	time.Sleep(2 * grace)
	young := s.pushBlob(t, a, []byte("blob pushed just now, its manifest still to come"))
	if resp := s.do(t, http.MethodHead, "/v2/"+a+"/blobs/"+inFlightDigest.String(), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD in-flight blob: %s", resp.Status)
	}
	before := diskUsage(t, root)

	rep, err := s.reg.Collector().Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	// The index's exclusive zTOC, the orphan's blob, the two manifests'
	// own content: four blobs.
	wantBytes := int64(len(exclusive) + len(orphanBlob) + len(orphanBody))
	if rep.DeletedBlobs != 4 || rep.DeletedManifest != 1 || rep.DeletedUploads != 1 || rep.DeletedBytes <= wantBytes || rep.Kept != 1 {
		t.Errorf("report %+v; want 4 blobs (more than %d bytes), 1 manifest, 1 upload deleted and 1 blob kept in use", rep, wantBytes)
	}
	if storage == "filesystem" {
		if after := diskUsage(t, root); before-after < rep.DeletedBytes {
			t.Errorf("disk usage %d -> %d: dropped by less than the %d bytes deleted", before, after, rep.DeletedBytes)
		}
	}
	status := func(method, path string) int {
		return s.do(t, method, path, nil, "Accept", ocispec.MediaTypeImageManifest).StatusCode
	}
	for path, want := range map[string]int{
		"/v2/" + a + "/blobs/" + digest.FromBytes(exclusive).String():    http.StatusNotFound,
		"/v2/" + a + "/blobs/" + digest.FromBytes(orphanBlob).String():   http.StatusNotFound,
		"/v2/" + a + "/manifests/" + orphan.String():                     http.StatusNotFound,
		"/v2/" + a + "/manifests/" + gone.String():                       http.StatusNotFound,
		"/v2/" + a + "/manifests/v1":                                     http.StatusOK,
		"/v2/" + a + "/manifests/" + imageDigest.String():                http.StatusOK,
		"/v2/" + a + "/blobs/" + digest.FromBytes(shared).String():       http.StatusOK,
		"/v2/" + b + "/blobs/" + digest.FromBytes(shared).String():       http.StatusOK,
		"/v2/" + catalog + "/blobs/" + digest.FromBytes(shared).String(): http.StatusOK,
		"/v2/" + b + "/manifests/" + kept.String():                       http.StatusOK,
		"/v2/" + catalog + "/manifests/" + record.String():               http.StatusOK,
		"/v2/" + a + "/blobs/" + young.String():                          http.StatusOK,
		"/v2/" + a + "/blobs/" + inFlightDigest.String():                 http.StatusOK,
	} {
		if got := status(http.MethodHead, path); got != want {
			t.Errorf("HEAD %s: %d, want %d", path, got, want)
		}
	}
	if got := status(http.MethodGet, upload); got != http.StatusNotFound {
		t.Errorf("abandoned upload: %d, want 404", got)
	}
	// Every blob of the remaining index is there.
	var m ocispec.Manifest
	if err := json.Unmarshal(readAll(t, s.do(t, http.MethodGet, "/v2/"+b+"/manifests/"+kept.String(), nil, "Accept", ocispec.MediaTypeImageManifest)), &m); err != nil {
		t.Fatal(err)
	}
	for _, d := range append(m.Layers, m.Config) {
		if got := status(http.MethodGet, "/v2/"+b+"/blobs/"+d.Digest.String()); got != http.StatusOK {
			t.Errorf("blob %s of the remaining index: %d", d.Digest, got)
		}
	}
	// The push that found its blob finishes with the manifest naming it.
	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest, "artifactType": artifacts.SOCIIndexV1,
		"config":  ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: s.pushBlob(t, a, emptyJSON), Size: 2},
		"layers":  []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: inFlightDigest, Size: int64(len(inFlight))}},
		"subject": ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: imageDigest, Size: int64(len(image))}})
	if resp := s.putManifest(t, a, digest.FromBytes(body).String(), body); resp.StatusCode != http.StatusCreated {
		t.Fatalf("index after the run: %s %s", resp.Status, readAll(t, resp))
	}
	// A second run after the grace finds nothing more to delete but the
	// young blob nothing named in the end.
	time.Sleep(2 * grace)
	rep, err = s.reg.Collector().Run(ctx)
	if err != nil || rep.DeletedBlobs != 1 || rep.DeletedManifest != 0 {
		t.Errorf("second run: %+v, %v; want only the young blob deleted", rep, err)
	}
	if got := status(http.MethodHead, "/v2/"+a+"/blobs/"+inFlightDigest.String()); got != http.StatusOK {
		t.Errorf("blob of the new index: %d", got)
	}
	for _, name := range []string{"hermes_registry_gc_runs_total", "hermes_registry_gc_blobs_deleted_total", "hermes_registry_gc_last_success_timestamp_seconds"} {
		_ = metric(t, s, name)
	}
}

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
