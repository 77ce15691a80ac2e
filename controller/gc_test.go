package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/controller/policy"
	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/registry/cli"
)

func TestMain(m *testing.M) {
	cli.RouteLibraryLogs(slog.DiscardHandler) // the in-memory registries' request logs
	m.Run()
}

// gcWorld is a collector over a real in-memory cache registry, a tracker
// and policies from a fake client, with a clock the test moves.
type gcWorld struct {
	t     *testing.T
	ctx   context.Context
	cache artifacts.Cache
	c     client.Client
	tr    *tracker
	gc    *collector
	mu    sync.Mutex
	clock time.Time
}

func newGCWorld(t *testing.T) *gcWorld {
	t.Helper()
	ctx := context.Background()
	reg, err := registry.New(ctx, registry.Config{Storage: configuration.Storage{"inmemory": {}}, Auth: registry.AuthConfig{AnonymousWrites: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	g := &gcWorld{t: t, ctx: ctx, cache: artifacts.Cache{Host: strings.TrimPrefix(srv.URL, "http://"), PlainHTTP: true},
		c: fake.NewClientBuilder().WithScheme(scheme).Build(), clock: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	g.tr = newTracker(g.now)
	m, err := newMetrics(prometheus.NewRegistry(), g.tr, func() (int, int) { return 0, 0 })
	if err != nil {
		t.Fatal(err)
	}
	g.gc = &collector{cache: g.cache, t: g.tr, ps: newPolicies(g.c, policy.Defaults{}), requeue: func(Key) {}, interval: time.Second, now: g.now, metrics: m}
	return g
}

func (g *gcWorld) now() time.Time { g.mu.Lock(); defer g.mu.Unlock(); return g.clock }

func (g *gcWorld) advance(d time.Duration) { g.mu.Lock(); g.clock = g.clock.Add(d); g.mu.Unlock() }

func (g *gcWorld) policy(name string, retention time.Duration, paused bool) {
	g.t.Helper()
	p := &v1alpha1.HermesPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := g.c.Get(g.ctx, client.ObjectKeyFromObject(p), p); err == nil {
		p.Spec.Paused, p.Generation = paused, p.Generation+1
		if err := g.c.Update(g.ctx, p); err != nil {
			g.t.Fatal(err)
		}
		return
	}
	p.UID, p.Generation = types.UID(name), 1
	p.Spec = v1alpha1.HermesPolicySpec{ImageSelectors: []v1alpha1.ImageSelector{{ImageRegex: `reg\.test/`}}, Paused: paused,
		Retention: &metav1.Duration{Duration: retention}}
	if err := g.c.Create(g.ctx, p); err != nil {
		g.t.Fatal(err)
	}
}

// use makes a Pod want image (resolved to manifest) under policy, or
// nothing when image is "".
func (g *gcWorld) use(pod, pol, image string, manifest digest.Digest) Key {
	k := ImageKey{Image: image, Platform: "linux/amd64", Settings: builder.DefaultSettings()}
	bk := Key{Repository: imageRepository(image), Manifest: manifest, Platform: k.Platform, Settings: k.Settings}
	if pol == "" {
		g.tr.setPod(types.NamespacedName{Namespace: "ns", Name: pod}, nil)
		return bk
	}
	g.tr.setPod(types.NamespacedName{Namespace: "ns", Name: pod}, []want{{policy: pol, image: k}})
	g.tr.linked(k, bk, "", credentials{}, "")
	return bk
}

// index pushes a SOCI index of manifest into image's cache repository.
func (g *gcWorld) index(image string, manifest digest.Digest, settings string, created time.Time) digest.Digest {
	g.t.Helper()
	repo, err := g.cache.Repository(image)
	if err != nil {
		g.t.Fatal(err)
	}
	cfg := ocispec.DescriptorEmptyJSON
	if err := repo.Blobs().Push(g.ctx, cfg, bytes.NewReader(cfg.Data)); err != nil && !strings.Contains(err.Error(), "exists") {
		g.t.Fatal(err)
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifacts.SOCIIndexV1, Config: cfg, Layers: []ocispec.Descriptor{},
		Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: manifest, Size: 1},
		Annotations: map[string]string{artifacts.AnnotationSettings: settings, artifacts.AnnotationPlatform: "linux/amd64",
			artifacts.AnnotationCreated: created.Format(time.RFC3339Nano)}}
	m.SchemaVersion = 2
	b, _ := json.Marshal(m)
	d := ocispec.Descriptor{MediaType: m.MediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := repo.Manifests().Push(g.ctx, d, bytes.NewReader(b)); err != nil {
		g.t.Fatal(err)
	}
	return d.Digest
}

func (g *gcWorld) indexes(image string, manifest digest.Digest) int {
	g.t.Helper()
	repo, _ := g.cache.Repository(image)
	descs, err := artifacts.Indexes(g.ctx, repo, manifest)
	if err != nil {
		g.t.Fatal(err)
	}
	return len(descs)
}

func (g *gcWorld) pass() {
	g.t.Helper()
	if err := g.gc.pass(g.ctx); err != nil {
		g.t.Fatal(err)
	}
}

// TestCollectorRetention: an index in use is never deleted; once unused
// it is kept for the retention, and for as long as a policy matching it
// is paused; then it goes, with its usage record.
func TestCollectorRetention(t *testing.T) {
	g := newGCWorld(t)
	const img = "reg.test/app:v1"
	man := digest.FromString("app manifest")
	g.policy("p", time.Hour, false)
	k := g.use("a", "p", img, man)
	if err := g.gc.ensure(g.ctx, k); err != nil {
		t.Fatal(err)
	}
	g.index(img, man, builder.DefaultSettings().Annotation(), g.now())
	g.pass() // the first pass deletes nothing
	g.advance(48 * time.Hour)
	g.pass()
	if n := g.indexes(img, man); n != 1 {
		t.Fatalf("in use: %d indexes, want 1", n)
	}
	g.use("a", "", img, man) // the Pod goes
	g.pass()                 // seen unused now
	g.advance(59 * time.Minute)
	g.pass()
	if n := g.indexes(img, man); n != 1 {
		t.Fatalf("within the retention: %d indexes", n)
	}
	g.policy("p", time.Hour, true)
	g.advance(2 * time.Hour)
	g.pass()
	if n := g.indexes(img, man); n != 1 {
		t.Fatalf("paused policy: %d indexes, want 1 (kept)", n)
	}
	g.policy("p", time.Hour, false)
	g.pass()
	if n := g.indexes(img, man); n != 0 {
		t.Fatalf("past the retention: %d indexes, want 0", n)
	}
	if v := testutil.ToFloat64(g.gc.metrics.gcDeleted.WithLabelValues(gcUnused)); v != 1 {
		t.Errorf("deleted{unused} = %v", v)
	}
	catalog, _ := g.cache.Catalog(artifacts.UsageCatalog)
	if recs, _, err := artifacts.Usages(g.ctx, catalog); err != nil || len(recs) != 0 {
		t.Errorf("usage records left: %+v %v", recs, err)
	}
}

// TestCollectorNewLeader: a record that says "in use" whose Pods are gone
// when a new leader starts counts as unused from then on, not from when it
// was written.
func TestCollectorNewLeader(t *testing.T) {
	g := newGCWorld(t)
	const img = "reg.test/app:v1"
	man := digest.FromString("app manifest")
	g.policy("p", time.Hour, false)
	k := g.use("a", "p", img, man)
	if err := g.gc.ensure(g.ctx, k); err != nil {
		t.Fatal(err)
	}
	g.index(img, man, builder.DefaultSettings().Annotation(), g.now())

	// The leader dies; the Pod goes; a day later another leads.
	g.advance(24 * time.Hour)
	next := newGCWorld(t)
	next.cache, next.c, next.clock = g.cache, g.c, g.now()
	next.gc.cache, next.gc.ps = g.cache, newPolicies(g.c, policy.Defaults{})
	next.pass()
	next.pass()
	next.advance(30 * time.Minute)
	next.pass()
	if n := next.indexes(img, man); n != 1 {
		t.Fatalf("30m after the new leader saw it unused (retention 1h): %d indexes, want 1", n)
	}
	next.advance(31 * time.Minute)
	next.pass()
	if n := next.indexes(img, man); n != 0 {
		t.Fatalf("past the retention: %d indexes", n)
	}
}

// TestCollectorSuperseded: of one manifest's indexes only the one with
// the settings wanted now stays, even when an unwanted one is newer.
func TestCollectorSuperseded(t *testing.T) {
	g := newGCWorld(t)
	const img = "reg.test/app:v1"
	man := digest.FromString("app manifest")
	g.policy("p", time.Hour, false)
	g.use("a", "p", img, man)
	wanted := builder.DefaultSettings().Annotation()
	g.index(img, man, "old settings", g.now().Add(-time.Hour))
	keep := g.index(img, man, wanted, g.now())
	g.index(img, man, "newer, unwanted", g.now().Add(time.Hour))
	g.pass()
	if n := g.indexes(img, man); n != 3 {
		t.Fatalf("first pass deleted: %d indexes left", n)
	}
	g.pass()
	repo, _ := g.cache.Repository(img)
	descs, err := artifacts.Indexes(g.ctx, repo, man)
	if err != nil || len(descs) != 1 || descs[0].Digest != keep {
		t.Fatalf("indexes %v %v, want only %s", descs, err, keep)
	}
	if v := testutil.ToFloat64(g.gc.metrics.gcDeleted.WithLabelValues(gcSuperseded)); v != 2 {
		t.Errorf("deleted{superseded} = %v", v)
	}
}
