package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
)

// gcArgs make artifact GC look often.
var gcArgs = []string{"--artifact-gc-interval", "300ms"}

func retention(d time.Duration) func(*v1alpha1.HermesPolicySpec) {
	return func(s *v1alpha1.HermesPolicySpec) { s.Retention = &metav1.Duration{Duration: d} }
}

// deletePod deletes a Pod at once (it never ran: no kubelet).
func (e *env) deletePod(t *testing.T, ns, name string) {
	t.Helper()
	zero := int64(0)
	if err := e.c.Delete(e.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, &client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
}

// waitReferrers waits until the cache lists n SOCI indexes of manifest.
func (e *env) waitReferrers(t *testing.T, image, manifest string, n int, timeout time.Duration) []string {
	t.Helper()
	var got []string
	harness.WaitFor(t, e.ctl.Process, timeout, fmt.Sprintf("%d indexes of %s", n, image), func() error {
		got = nil
		for _, d := range e.referrers(t, image, manifest) {
			got = append(got, d.Digest.String())
		}
		if len(got) != n {
			return fmt.Errorf("%d indexes: %v", len(got), got)
		}
		return nil
	})
	return got
}

// TestGCRetention: with a retention of seconds, the index of an image no
// Pod uses any more is deleted after it and nothing else is: another
// image's index (of a policy with the default retention) and the shared
// zTOC catalog stay; oras discover shows it gone.
func TestGCRetention(t *testing.T) {
	e := newEnv(t, gcArgs...)
	refA, manA, layersA := pushImage(t, e.ctx, e.origin.Host, "gc/short:v1", 2, 1)
	refB, manB := e.image(t, "gc/long:v1", 2, 2)
	e.namespace(t, "gc", nil)
	e.policy(t, "short", retention(2*time.Second), `/gc/short:`)
	e.policy(t, "long", nil, `/gc/long:`)
	e.pod(t, "gc", "a", []string{refA})
	e.pod(t, "gc", "b", []string{refB})
	e.status(t, "short", 2*time.Minute, "Ready", readyCount(1))
	e.status(t, "long", 2*time.Minute, "Ready", readyCount(1))
	idxB := e.waitReferrers(t, refB, manB, 1, 10*time.Second)
	e.waitReferrers(t, refA, manA, 1, 10*time.Second)

	// In use, nothing goes, however often GC looks.
	time.Sleep(3 * time.Second)
	e.waitReferrers(t, refA, manA, 1, time.Second)

	e.deletePod(t, "gc", "a")
	gone := time.Now()
	e.waitReferrers(t, refA, manA, 0, 30*time.Second)
	took := time.Since(gone)
	if took < 2*time.Second {
		t.Errorf("deleted %s after the Pod went, before the retention of 2s", took)
	}
	t.Logf("index deleted %s after its last Pod", took.Round(100*time.Millisecond))
	if got := e.waitReferrers(t, refB, manB, 1, time.Second); got[0] != idxB[0] {
		t.Errorf("the other image's index changed: %v, was %v", got, idxB)
	}
	for _, l := range layersA {
		if refs := referrersAt(t, e.ctl.RegistryURL, artifacts.ZtocCatalog, l, artifacts.ZtocRecordType); len(refs) == 0 {
			t.Errorf("the zTOC catalog lost the record of layer %s", l)
		}
	}
	repoA, _ := artifacts.Repository(refA)
	home := t.TempDir()
	out, err := harness.RunEnvErr(time.Minute, []string{"HOME=" + home}, harness.Bin(t, "oras"), "discover", "--plain-http", "--format", "json",
		"--artifact-type", artifacts.SOCIIndexV1, e.ctl.RegistryHost+"/"+repoA+"@"+manA)
	if err != nil || strings.Contains(out, artifacts.SOCIIndexV1) {
		t.Errorf("oras discover still lists an index of %s: %v\n%s", refA, err, out)
	}
	m := e.ctl.Metrics(t)
	if n := harness.Metric(m, `hermes_controller_gc_artifacts_deleted_total{reason="unused"}`); n != 1 {
		t.Errorf("gc_artifacts_deleted_total{unused} = %v, want 1\n%s", n, grep(m, "hermes_controller_gc"))
	}
	if !strings.Contains(e.ctl.Output(), "artifact deleted") || !strings.Contains(e.ctl.Output(), "longer than the retention 2s of policies [short]") {
		t.Errorf("no log line saying why the artifact went")
	}

	// The image used again is built again.
	e.pod(t, "gc", "a2", []string{refA})
	e.waitReferrers(t, refA, manA, 1, time.Minute)
}

// TestGCPolicyDeleted: a deleted policy's images lose their artifacts
// after its retention, unless another policy still matches them. The
// usage records in the cache carry "last used" across a restart.
func TestGCPolicyDeleted(t *testing.T) {
	e := newEnv(t, gcArgs...)
	refX, manX := e.image(t, "del/x:v1", 1, 1)
	refY, manY := e.image(t, "del/y:v1", 1, 2)
	e.namespace(t, "del", nil)
	e.policy(t, "both", retention(2*time.Second), `/del/`)
	e.policy(t, "keep-y", retention(time.Hour), `/del/y:`)
	e.pod(t, "del", "p", []string{refX, refY})
	e.status(t, "both", 2*time.Minute, "Ready", readyCount(2))
	e.waitReferrers(t, refX, manX, 1, 10*time.Second)
	e.waitReferrers(t, refY, manY, 1, 10*time.Second)
	time.Sleep(time.Second) // a GC pass writes the usage records

	// The controller restarts; meanwhile the policy goes (the Pod stays:
	// nothing wants its images for that policy any more).
	e.ctl.End(false, 20*time.Second)
	if err := e.c.Delete(e.ctx, &v1alpha1.HermesPolicy{ObjectMeta: metav1.ObjectMeta{Name: "both"}}); err != nil {
		t.Fatal(err)
	}
	e.ctl.Restart(t, false)
	e.waitReferrers(t, refX, manX, 0, 30*time.Second)
	time.Sleep(3 * time.Second)
	e.waitReferrers(t, refY, manY, 1, time.Second)
	m := e.ctl.Metrics(t)
	if n := harness.Metric(m, `hermes_controller_gc_artifacts_deleted_total{reason="unmatched"}`); n != 1 {
		t.Errorf("gc_artifacts_deleted_total{unmatched} = %v, want 1\n%s", n, grep(m, "hermes_controller_gc"))
	}
}

// TestGCSuperseded: a policy's span size changes; the manifest is built
// with the new settings and the older index goes, so nodes only ever see
// one.
func TestGCSuperseded(t *testing.T) {
	e := newEnv(t, gcArgs...)
	ref, man := e.image(t, "sup/app:v1", 2, 1)
	e.namespace(t, "sup", nil)
	e.policy(t, "sup", nil, `/sup/app:`)
	e.pod(t, "sup", "p", []string{ref})
	st := e.status(t, "sup", 2*time.Minute, "Ready", readyCount(1))
	first := st.Images[0].IndexDigest

	var p v1alpha1.HermesPolicy
	if err := e.c.Get(e.ctx, client.ObjectKey{Name: "sup"}, &p); err != nil {
		t.Fatal(err)
	}
	span := mustQuantity("1Mi")
	p.Spec.Build.SpanSize = &span
	if err := e.c.Update(e.ctx, &p); err != nil {
		t.Fatal(err)
	}
	st = e.status(t, "sup", 2*time.Minute, "Ready with a new index", func(s v1alpha1.HermesPolicyStatus) error {
		if err := readyCount(1)(s); err != nil {
			return err
		}
		if s.Images[0].IndexDigest == first {
			return fmt.Errorf("still the first index")
		}
		return nil
	})
	got := e.waitReferrers(t, ref, man, 1, 30*time.Second)
	if got[0] != st.Images[0].IndexDigest {
		t.Fatalf("the cache kept %v, want the new index %s (old %s)", got, st.Images[0].IndexDigest, first)
	}
	m := e.ctl.Metrics(t)
	if n := harness.Metric(m, `hermes_controller_gc_artifacts_deleted_total{reason="superseded"}`); n != 1 {
		t.Errorf("gc_artifacts_deleted_total{superseded} = %v, want 1\n%s", n, grep(m, "hermes_controller_gc"))
	}
}
