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
	"github.com/hermes-oci/hermes/tests/harness"
)

func builds(t *testing.T, e *env) float64 {
	t.Helper()
	return harness.Metric(e.ctl.Metrics(t), `hermes_controller_builds_total{outcome="built"}`)
}

// TestScope: a paused policy queues nothing; a deleted policy builds
// nothing new; a namespace selector is respected, and follows label changes.
func TestScope(t *testing.T) {
	e := newEnv(t)
	paused, _ := e.image(t, "paused/app:v1", 1, 1)
	on, _ := e.image(t, "ns/on:v1", 1, 2)
	off, _ := e.image(t, "ns/off:v1", 1, 3)
	gone1, _ := e.image(t, "gone/a:v1", 1, 4)
	gone2, _ := e.image(t, "gone/b:v1", 1, 5)
	e.namespace(t, "on", map[string]string{"hermes": "on"})
	e.namespace(t, "off", nil)

	e.policy(t, "paused", func(s *v1alpha1.HermesPolicySpec) { s.Paused = true }, `/paused/`)
	e.policy(t, "labelled", func(s *v1alpha1.HermesPolicySpec) {
		s.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"hermes": "on"}}
	}, `/ns/`)
	e.policy(t, "gone", nil, `/gone/`)

	e.pod(t, "on", "paused", []string{paused})
	e.pod(t, "on", "on", []string{on})
	e.pod(t, "off", "off", []string{off})
	e.pod(t, "on", "gone-a", []string{gone1})

	e.status(t, "labelled", time.Minute, "only the labelled namespace's image", func(s v1alpha1.HermesPolicyStatus) error {
		if s.Counts.Total != 1 || s.Counts.Ready != 1 || s.Images[0].Image != on {
			return fmt.Errorf("counts %+v images %+v", s.Counts, s.Images)
		}
		return nil
	})
	e.status(t, "gone", time.Minute, "gone/a ready", readyCount(1))
	st := e.status(t, "paused", time.Minute, "the Paused condition", func(s v1alpha1.HermesPolicyStatus) error {
		if c := metaCondition(s.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != v1alpha1.ReasonPaused || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("conditions %+v", s.Conditions)
		}
		return nil
	})
	if st.Counts.Total != 0 {
		t.Errorf("paused policy counts %+v, want none", st.Counts)
	}

	// The other namespace gets the label: its Pod's image is wanted now.
	var ns corev1.Namespace
	if err := e.c.Get(e.ctx, client.ObjectKey{Name: "off"}, &ns); err != nil {
		t.Fatal(err)
	}
	ns.Labels = map[string]string{"hermes": "on"}
	if err := e.c.Update(e.ctx, &ns); err != nil {
		t.Fatal(err)
	}
	e.status(t, "labelled", time.Minute, "both namespaces' images", readyCount(2))

	// The policy goes; a new Pod of an image only it selected gets nothing.
	if err := e.c.Delete(e.ctx, &v1alpha1.HermesPolicy{ObjectMeta: metav1.ObjectMeta{Name: "gone"}}); err != nil {
		t.Fatal(err)
	}
	before := builds(t, e)
	time.Sleep(time.Second) // the controller sees the deletion
	e.pod(t, "on", "gone-b", []string{gone2})
	time.Sleep(3 * time.Second)
	if after := builds(t, e); after != before {
		t.Errorf("builds went from %v to %v after the policy was deleted", before, after)
	}
	if e.referrersOf(t, gone2) != 0 {
		t.Errorf("an index of %s was built after its policy was deleted", gone2)
	}
	// Nothing of the paused policy was built either.
	if e.referrersOf(t, paused) != 0 {
		t.Errorf("an index of %s was built under a paused policy", paused)
	}
	if n := builds(t, e); n != 3 {
		t.Errorf("builds = %v, want 3 (ns/on, ns/off, gone/a)", n)
	}
}

// referrersOf counts the SOCI indexes of the image ref's manifest at the
// origin.
func (e *env) referrersOf(t *testing.T, ref string) int {
	t.Helper()
	out := harness.Run(t, time.Minute, harness.Bin(t, "crane"), "digest", "--insecure", ref)
	return len(e.referrers(t, ref, strings.TrimSpace(out)))
}

// TestInvalidSelector: a regex that gets past the CRD (here: a CRD without
// its RE2 rule, as an older one would be) is a condition and an Event; the
// policy's other selectors keep working and nothing crashes.
func TestInvalidSelector(t *testing.T) {
	e := newEnv(t)
	e.kube.Kubectl(t, "patch", "crd", "hermespolicies.hermes.dev", "--type=json", "-p",
		`[{"op":"remove","path":"/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/imageSelectors/items/properties/imageRegex/x-kubernetes-validations"}]`)
	ref, _ := e.image(t, "valid/app:v1", 1, 1)
	e.namespace(t, "ns", nil)
	// The API server takes a moment to serve the patched schema.
	harness.WaitFor(t, nil, 30*time.Second, "a policy with an invalid regex accepted", func() error {
		p := &v1alpha1.HermesPolicy{ObjectMeta: metav1.ObjectMeta{Name: "mixed"}, Spec: v1alpha1.HermesPolicySpec{
			ImageSelectors: []v1alpha1.ImageSelector{{ImageRegex: `(unclosed`}, {ImageRegex: `/valid/`}},
			Build:          &v1alpha1.BuildSettings{MinLayerSize: ptr(mustQuantity("0"))},
		}}
		return e.c.Create(e.ctx, p)
	})
	e.pod(t, "ns", "app", []string{ref})
	st := e.status(t, "mixed", time.Minute, "the valid selector's image Ready", readyCount(1))
	c := metaCondition(st.Conditions, v1alpha1.ConditionReady)
	if c == nil || c.Reason != v1alpha1.ReasonInvalidSelector || !strings.Contains(c.Message, "(unclosed") || !strings.Contains(c.Message, "missing closing )") {
		t.Fatalf("Ready condition %+v; want InvalidSelector naming the regex and why", c)
	}
	events := e.kube.Kubectl(t, "get", "events", "-A", "--field-selector", "involvedObject.name=mixed", "-o", "jsonpath={range .items[*]}{.type} {.reason} {.message}{\"\\n\"}{end}")
	if !strings.Contains(events, "Warning InvalidSelector imageSelectors[0]") {
		t.Errorf("no InvalidSelector warning Event:\n%s", events)
	}
	if ok, err := e.ctl.Exited(); ok {
		t.Fatalf("controller exited: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
