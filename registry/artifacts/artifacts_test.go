package artifacts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/registry/cli"
)

func TestMain(m *testing.M) {
	cli.RouteLibraryLogs(slog.DiscardHandler)
	m.Run()
}

func TestRepository(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":      "docker.io/library/nginx",
		"nginx:1.27": "docker.io/library/nginx",
		"127.0.0.1:5000/team/app@sha256:" + strings.Repeat("a", 64): "127.0.0.1_5000/team/app",
		"ghcr.io/org/app:v1": "ghcr.io/org/app",
	} {
		if got, err := artifacts.Repository(in); err != nil || got != want {
			t.Errorf("Repository(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, err := artifacts.Locator("cache:5000", "nginx"); err != nil || got != "cache:5000/docker.io/library/nginx" {
		t.Errorf("Locator = %q, %v", got, err)
	}
	for _, bad := range []string{"", "team/UPPER", "a b"} {
		if _, err := artifacts.Repository(bad); err == nil {
			t.Errorf("Repository(%q): no error", bad)
		}
	}
	if _, err := artifacts.Locator("", "nginx"); err == nil {
		t.Error("Locator without host: no error")
	}
}

func desc(hex byte, created string, ann ...string) ocispec.Descriptor {
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifacts.SOCIIndexV1,
		Digest: digest.Digest("sha256:" + strings.Repeat(string(hex), 64)), Size: 1, Annotations: map[string]string{}}
	if created != "" {
		d.Annotations[artifacts.AnnotationCreated] = created
	}
	for i := 0; i+1 < len(ann); i += 2 {
		d.Annotations[ann[i]] = ann[i+1]
	}
	return d
}

func TestNewest(t *testing.T) {
	got := artifacts.Newest([]ocispec.Descriptor{
		desc('1', ""),                               // no date: oldest
		desc('2', "2026-12-01T10:00:00Z"),           // older
		desc('4', "2026-12-02T10:00:00.5Z"),         // newest
		desc('3', "2026-12-02T10:00:00.5Z"),         // same time: lower digest first
		desc('0', "not a date"),                     // unreadable: oldest, digest order
		desc('5', "2026-12-02T10:00:00.000000001Z"), // nanoseconds count
	})
	var order []byte
	for _, d := range got {
		order = append(order, d.Digest.Encoded()[0])
	}
	if string(order) != "345201" {
		t.Fatalf("order %s, want 345201", order)
	}
}

// fakeRepo is an in-memory Referrers for cases a real registry does not
// produce: listings without annotations, filters ignored.
type fakeRepo struct {
	refs      []ocispec.Descriptor
	manifests map[digest.Digest][]byte
	err       error
}

func (f *fakeRepo) Referrers(_ context.Context, _ ocispec.Descriptor, _ string, fn func([]ocispec.Descriptor) error) error {
	if f.err != nil {
		return f.err
	}
	return fn(f.refs)
}

func (f *fakeRepo) Fetch(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	b, ok := f.manifests[d.Digest]
	if !ok {
		return nil, errors.New("no such manifest")
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func TestFindIndexReadsMissingAnnotations(t *testing.T) {
	body, _ := json.Marshal(ocispec.Manifest{Annotations: map[string]string{artifacts.AnnotationSettings: "s1", artifacts.AnnotationCreated: "2026-12-02T00:00:00Z"}})
	bare := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifacts.SOCIIndexV1, Digest: digest.FromBytes(body), Size: int64(len(body))}
	other := desc('9', "2026-12-03T00:00:00Z", artifacts.AnnotationSettings, "s2")
	foreign := desc('8', "2030-01-01T00:00:00Z")
	foreign.ArtifactType = "application/vnd.example.sbom"
	repo := &fakeRepo{refs: []ocispec.Descriptor{bare, other, foreign}, manifests: map[digest.Digest][]byte{bare.Digest: body}}
	subject := digest.FromString("subject")

	got, err := artifacts.FindIndex(context.Background(), repo, subject, artifacts.Selector{Settings: "s1"})
	if err != nil || got.Digest != bare.Digest {
		t.Fatalf("settings s1: %v, %v; want the index whose annotations had to be read", got.Digest, err)
	}
	if got, err := artifacts.FindIndex(context.Background(), repo, subject, artifacts.Selector{}); err != nil || got.Digest != other.Digest {
		t.Fatalf("any: %v, %v; want the newest SOCI index (never another artifact type)", got.Digest, err)
	}
	if _, err := artifacts.FindIndex(context.Background(), repo, subject, artifacts.Selector{Settings: "s3"}); !errors.Is(err, artifacts.ErrNoIndex) || !strings.Contains(err.Error(), "none built with the settings") {
		t.Fatalf("no match: %v", err)
	}
	repo.manifests = nil
	if _, err := artifacts.FindIndex(context.Background(), repo, subject, artifacts.Selector{}); err == nil || errors.Is(err, artifacts.ErrNoIndex) {
		t.Fatalf("unreadable index: %v; want an error that is not ErrNoIndex", err)
	}
	repo.err = errors.New("connection reset")
	if _, err := artifacts.FindIndex(context.Background(), repo, subject, artifacts.Selector{}); err == nil || errors.Is(err, artifacts.ErrNoIndex) {
		t.Fatalf("registry failure: %v; want an error that is not ErrNoIndex", err)
	}
	if _, err := artifacts.FindIndex(context.Background(), repo, "sha256:nope", artifacts.Selector{}); err == nil {
		t.Fatal("bad digest accepted")
	}
}

// TestFindIndexInRegistry pushes indexes into the real cache registry (in
// process) and finds them through its Referrers API with oras-go, as the
// builder and the snapshotter do.
// inMemoryCache serves a cache registry with in-memory storage that
// anyone may write to (tests opt out of the safe default explicitly), and
// a func that stops serving it.
func inMemoryCache(t *testing.T) (artifacts.Cache, func()) {
	t.Helper()
	reg, err := registry.New(context.Background(), registry.Config{Storage: configuration.Storage{"inmemory": {}}, Auth: registry.AuthConfig{AnonymousWrites: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return artifacts.Cache{Host: strings.TrimPrefix(srv.URL, "http://"), PlainHTTP: true}, srv.Close
}

func TestFindIndexInRegistry(t *testing.T) {
	ctx := context.Background()
	cache, stop := inMemoryCache(t)
	host := cache.Host
	repo, err := cache.Repository("127.0.0.1:5000/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if repo.Reference.Repository != "127.0.0.1_5000/team/app" {
		t.Fatalf("repository %q", repo.Reference.Repository)
	}
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("image manifest"), Size: 14}

	if _, err := artifacts.FindIndex(ctx, repo, subject.Digest, artifacts.Selector{}); !errors.Is(err, artifacts.ErrNoIndex) {
		t.Fatalf("empty cache: %v, want ErrNoIndex", err)
	}
	now := time.Now().UTC()
	push := func(settings string, created time.Time, platform string) ocispec.Descriptor {
		t.Helper()
		cfg := ocispec.DescriptorEmptyJSON
		if err := repo.Blobs().Push(ctx, cfg, bytes.NewReader(cfg.Data)); err != nil && !strings.Contains(err.Error(), "exists") {
			t.Fatal(err)
		}
		m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifacts.SOCIIndexV1,
			Config: ocispec.Descriptor{MediaType: cfg.MediaType, Digest: cfg.Digest, Size: cfg.Size}, Layers: []ocispec.Descriptor{},
			Subject: &subject, Annotations: map[string]string{
				artifacts.AnnotationSettings: settings, artifacts.AnnotationCreated: created.Format(time.RFC3339Nano),
				artifacts.AnnotationBuildTool: "test", artifacts.AnnotationPlatform: platform,
			}}
		m.SchemaVersion = 2
		b, _ := json.Marshal(m)
		d := ocispec.Descriptor{MediaType: m.MediaType, ArtifactType: m.ArtifactType, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := repo.Manifests().Push(ctx, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	old := push("span=1", now.Add(-time.Hour), "linux/amd64")
	newer := push("span=2", now, "linux/amd64")
	arm := push("span=1", now.Add(time.Minute), "linux/arm64")

	all, err := artifacts.Indexes(ctx, repo, subject.Digest)
	if err != nil || len(all) != 3 || all[0].Digest != arm.Digest || all[2].Digest != old.Digest {
		t.Fatalf("Indexes = %v, %v", all, err)
	}
	amd64 := &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	for name, c := range map[string]struct {
		sel  artifacts.Selector
		want digest.Digest
	}{
		"newest":             {artifacts.Selector{}, arm.Digest},
		"settings":           {artifacts.Selector{Settings: "span=1"}, arm.Digest},
		"settings, platform": {artifacts.Selector{Settings: "span=1", Platform: amd64}, old.Digest},
		"platform":           {artifacts.Selector{Platform: amd64}, newer.Digest},
		"build tool":         {artifacts.Selector{BuildTool: "test", Settings: "span=2"}, newer.Digest},
	} {
		got, err := artifacts.FindIndex(ctx, repo, subject.Digest, c.sel)
		if err != nil || got.Digest != c.want {
			t.Errorf("%s: %v, %v; want %v", name, got.Digest, err, c.want)
		}
	}
	if _, err := artifacts.FindIndex(ctx, repo, subject.Digest, artifacts.Selector{BuildTool: "soci"}); !errors.Is(err, artifacts.ErrNoIndex) {
		t.Errorf("other build tool: %v", err)
	}

	// A repository the cache has never seen, and a cache that refuses.
	other, _ := cache.Repository("docker.io/library/nothing")
	if _, err := artifacts.FindIndex(ctx, other, subject.Digest, artifacts.Selector{}); !errors.Is(err, artifacts.ErrNoIndex) {
		t.Errorf("unknown repository: %v", err)
	}
	stop()
	dead, _ := remote.NewRepository(host + "/docker.io/library/nothing")
	dead.PlainHTTP = true
	if _, err := artifacts.FindIndex(ctx, dead, subject.Digest, artifacts.Selector{}); err == nil || errors.Is(err, artifacts.ErrNoIndex) {
		t.Errorf("cache down: %v; want an error that is not ErrNoIndex", err)
	}
}

// TestFindProfile: profiles are found by the same Referrers lookup as
// indexes, an index among the referrers is never taken for a profile, the
// newest wins and a pin picks its own or none.
func TestFindProfile(t *testing.T) {
	ctx := context.Background()
	manifest := digest.FromString("manifest")
	prof := func(hex byte, created string) ocispec.Descriptor {
		d := desc(hex, created)
		d.ArtifactType = artifacts.ProfileType
		return d
	}
	repo := &fakeRepo{refs: []ocispec.Descriptor{
		desc('9', "2026-12-03T00:00:00Z"), // an index, newer than every profile
		prof('1', "2026-12-01T00:00:00Z"),
		prof('2', "2026-12-02T00:00:00Z"),
	}}
	d, err := artifacts.FindProfile(ctx, repo, manifest, "")
	if err != nil || d.Digest != prof('2', "").Digest {
		t.Fatalf("FindProfile = %v, %v; want the newest profile", d.Digest, err)
	}
	pinned := prof('1', "").Digest
	if d, err := artifacts.FindProfile(ctx, repo, manifest, pinned); err != nil || d.Digest != pinned {
		t.Fatalf("pinned: %v, %v", d.Digest, err)
	}
	if _, err := artifacts.FindProfile(ctx, repo, manifest, desc('9', "").Digest); !errors.Is(err, artifacts.ErrNoProfile) {
		t.Fatalf("pinning an index: %v, want ErrNoProfile", err)
	}
	if _, err := artifacts.FindProfile(ctx, &fakeRepo{refs: []ocispec.Descriptor{desc('9', "")}}, manifest, ""); !errors.Is(err, artifacts.ErrNoProfile) {
		t.Fatalf("only an index: %v, want ErrNoProfile", err)
	}
	if _, err := artifacts.FindProfile(ctx, repo, "bad", ""); err == nil || errors.Is(err, artifacts.ErrNoProfile) {
		t.Fatalf("bad digest: %v", err)
	}
}
