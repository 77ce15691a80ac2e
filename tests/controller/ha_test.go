package controller

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
)

// Short Lease durations, so a failover takes seconds.
const lease = 4 * time.Second

var haArgs = []string{"--leader-elect", "--leader-election-namespace", "default",
	"--lease-duration", lease.String(), "--renew-deadline", "3s", "--retry-period", "500ms"}

// replicas starts two controllers against one API server and one cache
// storage (a shared filesystem directory, or S3 through storage args) and
// returns them with the leader first.
func replicas(t *testing.T, k *harness.Kube, root string, args ...string) (*harness.Controller, *harness.Controller) {
	t.Helper()
	o := harness.ControllerOptions{Root: root, Args: append(slices.Clone(haArgs), args...)}
	a, b := harness.StartController(t, k, o), harness.StartController(t, k, o)
	var leader, other *harness.Controller
	harness.WaitFor(t, a.Process, 30*time.Second, "a leader", func() error {
		la, lb := isLeader(t, a), isLeader(t, b)
		switch {
		case la && lb:
			t.Fatal("two leaders")
		case la:
			leader, other = a, b
		case lb:
			leader, other = b, a
		default:
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	return leader, other
}

// isLeader reads client-go's leader election gauge from c's metrics.
func isLeader(t *testing.T, c *harness.Controller) bool {
	return harness.Metric(c.Metrics(t), `leader_election_master_status{name="hermes-controller"}`) == 1
}

// TestLeaderFailover: two replicas; only the leader builds (every build
// is counted in the origin's access log). The leader is SIGKILLed
// mid-queue: the other takes over within the Lease duration, finishes the
// queue, rebuilds nothing that had finished, and loses nothing.
func TestLeaderFailover(t *testing.T) {
	e := newEnvWithout(t, harness.RegistryOptions{})
	k, ctx := e.kube, e.ctx
	proxy := harness.StartProxy(t, e.origin.URL)

	const n = 8
	var refs []string
	layers := map[string][]string{} // image -> layer digests
	for i := range n {
		_, _, ls := pushImage(t, ctx, e.origin.Host, fmt.Sprintf("ha/app%d:v1", i), 2, int64(i+1))
		ref := fmt.Sprintf("%s/ha/app%d:v1", proxy.Host, i)
		refs = append(refs, ref)
		layers[ref] = ls
	}
	proxy.Throttle(1 << 20) // 1 MiB/s: 512 KiB an image, a queue of ~4 s
	root := harness.TempDir(t, "cache")
	leader, other := replicas(t, k, root, "--build-concurrency", "1")
	e.ctl = leader
	e.namespace(t, "ha", nil)
	e.policy(t, "ha", nil, `/ha/`)
	for i, ref := range refs {
		e.pod(t, "ha", fmt.Sprintf("p%d", i), []string{ref})
	}
	before := e.status(t, "ha", 2*time.Minute, "some images Ready", func(s v1alpha1.HermesPolicyStatus) error {
		if s.Counts.Ready < 2 {
			return fmt.Errorf("counts %+v", s.Counts)
		}
		return nil
	})
	if before.Counts.Ready == n {
		t.Fatalf("the queue finished before the leader could be killed: %+v", before.Counts)
	}
	var finished []string
	for _, im := range before.Images {
		if im.Phase == v1alpha1.PhaseReady {
			finished = append(finished, im.Image)
		}
	}
	if got := harness.Metric(other.Metrics(t), `hermes_controller_builds_total{outcome="built"}`); got != 0 {
		t.Fatalf("the replica that does not lead built %v images", got)
	}
	leader.End(true, 5*time.Second) // SIGKILL: the Lease is not released
	killed := time.Now()
	harness.WaitFor(t, other.Process, 2*lease, "the other replica to lead", func() error {
		if !isLeader(t, other) {
			return fmt.Errorf("not leading")
		}
		return nil
	})
	took := time.Since(killed)
	t.Logf("failover after %s (lease %s); %d of %d images Ready before", took.Round(100*time.Millisecond), lease, len(finished), n)
	if took > lease+2*time.Second {
		t.Errorf("takeover took %s, more than the lease duration %s and a retry", took, lease)
	}
	e.ctl = other
	proxy.Throttle(0)
	st := e.status(t, "ha", 2*time.Minute, "every image Ready", readyCount(n))
	gets := blobGets(e.origin)
	for _, im := range st.Images {
		ls := layers[im.Image]
		if len(ls) == 0 {
			t.Fatalf("status names unknown image %s", im.Image)
		}
		for _, l := range ls {
			switch g := gets[l]; {
			case g == 0:
				t.Errorf("%s: layer %s never read", im.Image, l)
			case slices.Contains(finished, im.Image) && g != 1:
				t.Errorf("%s was Ready before the failover and was read again: layer %s %d times", im.Image, l, g)
			}
		}
		if got := referrersAt(t, other.RegistryURL, mustRepo(t, im.Image), im.Digest, artifacts.SOCIIndexV1); len(got) != 1 || got[0].Digest.String() != im.IndexDigest {
			t.Errorf("%s: cache lists %v, status says %s", im.Image, got, im.IndexDigest)
		}
	}
	if !strings.Contains(other.Output(), "index already in the cache") && len(finished) > 0 {
		t.Logf("the new leader found no finished index in the cache (it may not have needed to)")
	}
}

// TestReplicasS3: two replicas over shared S3 storage (versitygw) serve
// every referrer the leader pushed, both at once and alike; when GC deletes
// an index, neither serves it after the referrers cache TTL.
func TestReplicasS3(t *testing.T) {
	e := newEnvWithout(t, harness.RegistryOptions{})
	k := e.kube
	conf := harness.StartS3(t)
	const ttl = time.Second
	leader, other := replicas(t, k, "", "--storage-config", conf, "--http-secret", "shared", "--referrers-cache-ttl", ttl.String(), "--artifact-gc-interval", "300ms")
	e.ctl = leader
	const n = 4
	var refs []string
	for i := range n {
		ref, _ := e.image(t, fmt.Sprintf("s3/app%d:v1", i), 1, int64(i+1))
		refs = append(refs, ref)
	}
	e.namespace(t, "s3", nil)
	e.policy(t, "s3", retention(time.Second), `/s3/`)
	for i, ref := range refs {
		e.pod(t, "s3", fmt.Sprintf("p%d", i), []string{ref})
	}
	st := e.status(t, "s3", 2*time.Minute, "every image Ready", readyCount(n))
	// Both replicas at once, for every referrer: the same single index.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for _, im := range st.Images {
		for _, c := range []*harness.Controller{leader, other} {
			wg.Go(func() {
				got := referrersAt(t, c.RegistryURL, mustRepo(t, im.Image), im.Digest, artifacts.SOCIIndexV1)
				if len(got) != 1 || got[0].Digest.String() != im.IndexDigest {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s lists %v for %s, status %s", c.RegistryHost, got, im.Image, im.IndexDigest))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("stale or missing referrers:\n%s", strings.Join(bad, "\n"))
	}
	// One image stops being used: after its retention the leader deletes
	// its index, and within the TTL neither replica serves it.
	gone := st.Images[0]
	e.deletePod(t, "s3", fmt.Sprintf("p%d", slices.Index(refs, gone.Image)))
	harness.WaitFor(t, leader.Process, 30*time.Second, "the index deleted", func() error {
		if harness.Metric(leader.Metrics(t), `hermes_controller_gc_artifacts_deleted_total{reason="unused"}`) != 1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	deleted := time.Now()
	for _, c := range []*harness.Controller{leader, other} {
		harness.WaitFor(t, c.Process, ttl+2*time.Second, c.RegistryHost+" to stop listing the deleted index", func() error {
			if got := referrersAt(t, c.RegistryURL, mustRepo(t, gone.Image), gone.Digest, artifacts.SOCIIndexV1); len(got) != 0 {
				return fmt.Errorf("lists %v", got)
			}
			return nil
		})
	}
	t.Logf("both replicas stopped listing the deleted index within %s (TTL %s)", time.Since(deleted).Round(100*time.Millisecond), ttl)
	for _, im := range st.Images[1:] {
		for _, c := range []*harness.Controller{leader, other} {
			if got := referrersAt(t, c.RegistryURL, mustRepo(t, im.Image), im.Digest, artifacts.SOCIIndexV1); len(got) != 1 {
				t.Errorf("%s lost the index of %s: %v", c.RegistryHost, im.Image, got)
			}
		}
	}
}
