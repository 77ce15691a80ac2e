package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
)

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// TestPolicyToReady: a policy and a Pod that runs an image it selects →
// the policy's status says Ready with the index digest, the cache's
// Referrers API lists that index under the image manifest, and crane reads
// it.
func TestPolicyToReady(t *testing.T) {
	e := newEnv(t)
	ref, manifest := e.image(t, "team/app:v1", 2, 1)
	e.namespace(t, "team-a", nil)
	e.policy(t, "apps", nil, `/team/app:`)
	e.pod(t, "team-a", "app", []string{ref})

	st := e.status(t, "apps", 2*time.Minute, "one image Ready", readyCount(1))
	im := st.Images[0]
	if im.Digest != manifest || im.Platform != "linux/amd64" || im.IndexDigest == "" || im.Image != ref {
		t.Fatalf("image status %+v; want %s@%s with an index", im, ref, manifest)
	}
	cond := metaCondition(st.Conditions, v1alpha1.ConditionReady)
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != v1alpha1.ReasonAllReady || st.ObservedGeneration != 1 {
		t.Fatalf("conditions %+v, observedGeneration %d", st.Conditions, st.ObservedGeneration)
	}
	refs := e.referrers(t, ref, manifest)
	if len(refs) != 1 || refs[0].Digest.String() != im.IndexDigest || refs[0].ArtifactType != artifacts.SOCIIndexV1 {
		t.Fatalf("referrers %+v; want the index %s", refs, im.IndexDigest)
	}
	repo, _ := artifacts.Repository(ref)
	cache := e.ctl.RegistryHost + "/" + repo
	out := harness.Run(t, time.Minute, harness.Bin(t, "crane"), "manifest", "--insecure", cache+"@"+im.IndexDigest)
	if !strings.Contains(out, artifacts.SOCIIndexV1) || !strings.Contains(out, manifest) {
		t.Fatalf("crane manifest of the index:\n%s", out)
	}
	// Users inspect the cache with oras and crane, by digest and by tag,
	// though the image itself lives at the origin.
	oras := harness.Bin(t, "oras")
	home := t.TempDir()
	for _, subject := range []string{cache + "@" + manifest, cache + ":v1"} {
		out, err := harness.RunEnvErr(time.Minute, []string{"HOME=" + home}, oras, "discover", "--plain-http", "--format", "json", subject)
		if err != nil || !strings.Contains(out, im.IndexDigest) {
			t.Errorf("oras discover %s does not list %s: %v\n%s", subject, im.IndexDigest, err, out)
		}
	}
	if out := harness.Run(t, time.Minute, harness.Bin(t, "crane"), "digest", "--insecure", cache+":v1"); strings.TrimSpace(out) != manifest {
		t.Errorf("crane digest %s:v1 = %s, want %s", cache, out, manifest)
	}
	metrics := e.ctl.Metrics(t)
	if n := harness.Metric(metrics, `hermes_controller_builds_total{outcome="built"}`); n != 1 {
		t.Errorf("builds_total{built} = %v, want 1\n%s", n, grep(metrics, "hermes_controller"))
	}
	events := e.kube.Kubectl(t, "get", "events", "-A", "--field-selector", "involvedObject.name=apps", "-o", "jsonpath={range .items[*]}{.reason} {.message}{\"\\n\"}{end}")
	if !strings.Contains(events, "Built SOCI index "+im.IndexDigest) {
		t.Errorf("no Built event on the policy; events:\n%s", events)
	}
}

func metaCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

func grep(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

var _ = fmt.Sprint
