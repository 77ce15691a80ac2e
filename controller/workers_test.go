package controller

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/controller/builder/buildertest"
)

// fakeCreds hands out credentials by namespace, like pull secrets would.
type fakeCreds struct {
	mu    sync.Mutex
	creds map[string]auth.Credential // namespace -> credential
	reads int
}

func (f *fakeCreds) credentials(_ context.Context, sources []credSource, _ string) (credentials, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	for _, s := range sources {
		if c, ok := f.creds[s.Namespace]; ok {
			return staticCredentials(c), nil
		}
	}
	return credentials{fingerprint: "anonymous"}, nil
}

func (f *fakeCreds) set(ns string, c auth.Credential) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creds[ns] = c
}

type harnessT struct {
	t     *testing.T
	tr    *tracker
	w     *workers
	fake  *buildertest.Fake
	creds *fakeCreds
	gens  map[string]int64
	mu    sync.Mutex
}

func newWorkersForTest(t *testing.T) *harnessT {
	t.Helper()
	h := &harnessT{t: t, tr: newTracker(nil), fake: buildertest.NewFake(), creds: &fakeCreds{creds: map[string]auth.Credential{}}, gens: map[string]int64{"p": 1}}
	o, err := Options{Builder: h.fake, RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		RecheckFailed: 20 * time.Millisecond, Resync: time.Hour, ResolveTTL: time.Hour}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	h.w = newWorkers(o, h.tr, h.fake, h.creds, func() map[string]int64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		return map[string]int64{"p": h.gens["p"]}
	})
	m, err := newMetrics(prometheus.NewRegistry(), h.tr, h.w.depth)
	if err != nil {
		t.Fatal(err)
	}
	h.w.metrics, h.w.events = m, newEvents(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.w.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// want makes Pod ns/name want ref under policy p.
func (h *harnessT) want(ns, name, ref string) {
	s := builder.DefaultSettings()
	s.MinLayerSize = 0
	h.w.enqueue(h.tr.setPod(types.NamespacedName{Namespace: ns, Name: name}, []want{{
		policy: "p", image: ImageKey{Image: ref, Platform: "linux/amd64", Settings: s}, source: credSource{Namespace: ns, ServiceAccount: "default"},
	}})...)
}

// wait waits until policy p's counts satisfy ok.
func (h *harnessT) wait(what string, ok func(v1alpha1.ImageCounts) bool) []v1alpha1.ImageStatus {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		counts, list := h.tr.imageStatuses("p")
		if ok(counts) {
			return list
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s: counts %+v, images %+v", what, counts, list)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ready(n int32) func(v1alpha1.ImageCounts) bool {
	return func(c v1alpha1.ImageCounts) bool { return c.Ready == n && c.Total == n }
}

func TestDedupAcrossPodsAndTags(t *testing.T) {
	h := newWorkersForTest(t)
	d, _ := h.fake.AddImage("reg.test/app:v1", buildertest.ImageOptions{})
	h.fake.AddImage("reg.test/app:stable", buildertest.ImageOptions{}) // other content
	for i := 0; i < 20; i++ {
		h.want("ns", fmt.Sprintf("pod-%d", i), "reg.test/app:v1")
	}
	h.want("ns", "by-digest", "reg.test/app@"+d.String())
	list := h.wait("two refs of one image Ready", ready(2))
	if h.fake.TotalBuilds() != 1 || h.fake.Builds(d) != 1 {
		t.Fatalf("%d builds, want 1 for 21 Pods and two references of one digest", h.fake.TotalBuilds())
	}
	if list[0].IndexDigest == "" || list[0].IndexDigest != list[1].IndexDigest || list[0].Digest != d.String() {
		t.Fatalf("images %+v", list)
	}
	if h.fake.Published("reg.test/app:v1") != d {
		t.Errorf("tag not published in the cache")
	}
}

func TestRetryThenReady(t *testing.T) {
	h := newWorkersForTest(t)
	h.fake.AddImage("reg.test/flaky:v1", buildertest.ImageOptions{})
	h.fake.FailNext("reg.test/flaky:v1", fmt.Errorf("%w: 503", builder.ErrUnavailable), fmt.Errorf("%w: reset", builder.ErrUnavailable))
	h.want("ns", "a", "reg.test/flaky:v1")
	h.wait("Ready after two retryable failures", ready(1))
	if n := h.fake.Calls(); n != 3 {
		t.Errorf("%d builds attempted, want 3", n)
	}
}

func TestTerminalFailureRetriedOnlyOnChange(t *testing.T) {
	h := newWorkersForTest(t)
	secret := auth.Credential{Username: "u", Password: "right"}
	h.fake.AddImage("reg.test/private:v1", buildertest.ImageOptions{Credential: &secret})
	h.want("ns", "a", "reg.test/private:v1")
	list := h.wait("Failed without credentials", func(c v1alpha1.ImageCounts) bool { return c.Failed == 1 })
	if list[0].Phase != v1alpha1.PhaseFailed || list[0].Message == "" {
		t.Fatalf("images %+v", list)
	}
	resolves := h.fake.Resolves()
	time.Sleep(200 * time.Millisecond) // ~10 rechecks of the credentials
	if h.fake.Resolves() != resolves {
		t.Fatalf("resolved %d more times with unchanged credentials: a retry storm", h.fake.Resolves()-resolves)
	}
	h.creds.mu.Lock()
	reads := h.creds.reads
	h.creds.mu.Unlock()
	if reads < 3 {
		t.Errorf("credentials read %d times; the recheck should read them", reads)
	}
	h.creds.set("ns", auth.Credential{Username: "u", Password: "wrong"})
	h.wait("still Failed with wrong credentials", func(c v1alpha1.ImageCounts) bool { return c.Failed == 1 })
	time.Sleep(100 * time.Millisecond)
	tried := h.fake.Resolves()
	if tried != resolves+1 {
		t.Errorf("a credential change gave %d more resolutions, want 1", tried-resolves)
	}
	h.creds.set("ns", secret)
	h.wait("Ready with the right credentials", ready(1))

	// A build-level terminal failure is retried when the policy changes.
	h.fake.AddImage("reg.test/broken:v1", buildertest.ImageOptions{})
	h.fake.FailNext("reg.test/broken:v1", fmt.Errorf("%w: not a tar", builder.ErrInvalidLayer))
	h.want("ns", "b", "reg.test/broken:v1")
	h.wait("broken Failed", func(c v1alpha1.ImageCounts) bool { return c.Failed == 1 && c.Ready == 1 })
	calls := h.fake.Calls()
	time.Sleep(100 * time.Millisecond)
	if h.fake.Calls() != calls {
		t.Fatal("a terminal build failure was retried without a change")
	}
	h.mu.Lock()
	h.gens["p"] = 2
	h.mu.Unlock()
	h.want("ns", "b2", "reg.test/broken:v1") // the policy's Pods are reconciled again
	h.wait("broken Ready after the policy changed", ready(2))
}

func TestNotWantedNotBuilt(t *testing.T) {
	h := newWorkersForTest(t)
	h.fake.AddImage("reg.test/a:v1", buildertest.ImageOptions{})
	release := h.fake.Hold()
	h.want("ns", "a", "reg.test/a:v1")
	time.Sleep(50 * time.Millisecond)
	h.tr.setPod(types.NamespacedName{Namespace: "ns", Name: "a"}, nil) // the Pod goes
	release()
	time.Sleep(100 * time.Millisecond)
	if counts, _ := h.tr.imageStatuses("p"); counts.Total != 0 {
		t.Fatalf("counts %+v after the only Pod went", counts)
	}
}

func TestStatusBoundedAndSorted(t *testing.T) {
	tr := newTracker(nil)
	s := builder.DefaultSettings()
	var wants []want
	for i := 0; i < 300; i++ {
		wants = append(wants, want{policy: "p", image: ImageKey{Image: fmt.Sprintf("reg.test/app-%03d:v1", i), Platform: "linux/amd64", Settings: s}})
	}
	tr.setPod(types.NamespacedName{Namespace: "ns", Name: "big"}, wants)
	tr.imageFailed(wants[299].image, "fp", "", fmt.Errorf("unauthorized"))
	counts, list := tr.imageStatuses("p")
	if counts.Total != 300 || counts.Pending != 299 || counts.Failed != 1 || len(list) != maxStatusImages {
		t.Fatalf("counts %+v, %d listed", counts, len(list))
	}
	if list[0].Phase != v1alpha1.PhaseFailed || list[1].Image != "reg.test/app-000:v1" {
		t.Fatalf("the failure is not first, or the rest unsorted: %+v %+v", list[0], list[1])
	}
	if dirty := tr.takeDirty(); len(dirty) != 1 || dirty[0] != "p" {
		t.Fatalf("dirty %v", dirty)
	}
}
