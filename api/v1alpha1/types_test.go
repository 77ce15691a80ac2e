package v1alpha1

import (
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// populated returns a HermesPolicy with every field set, pointers and
// collections included; each call returns a fresh, equal object.
func populated() *HermesPolicy {
	span := resource.MustParse("4Mi")
	minLayer := resource.MustParse("10Mi")
	at := metav1.NewTime(time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC))
	return &HermesPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: SchemeGroupVersion.String(), Kind: "HermesPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Generation: 3, Labels: map[string]string{"team": "web"}},
		Spec: HermesPolicySpec{
			ImageSelectors: []ImageSelector{{ImageRegex: `^docker\.io/library/nginx:`}, {ImageRegex: `vllm`}},
			Platforms:      []string{"linux/amd64", "linux/arm64/v8"},
			Paused:         true,
			NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"hermes.dev/lazy": "true"},
				MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"frontend", "batch"}},
				},
			},
			Retention: &metav1.Duration{Duration: 168 * time.Hour},
			Build:     &BuildSettings{MinLayerSize: &minLayer, SpanSize: &span},
		},
		Status: HermesPolicyStatus{
			ObservedGeneration: 3,
			Conditions: []metav1.Condition{{
				Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonBuilding,
				Message: "1 of 2 images building", ObservedGeneration: 3, LastTransitionTime: at,
			}},
			Counts: ImageCounts{Total: 2, Building: 1, Ready: 1},
			Images: []ImageStatus{
				{
					Image: "docker.io/library/nginx:1.27", Digest: "sha256:aa", Platform: "linux/amd64",
					Phase: PhaseReady, IndexDigest: "sha256:bb", LastTransitionTime: at,
				},
				{
					Image: "docker.io/vllm/vllm-openai:v0.9.0", Digest: "sha256:cc", Platform: "linux/amd64",
					Phase: PhaseBuilding, Message: "indexing", LastTransitionTime: at,
					Progress: &BuildProgress{LayersDone: 3, Layers: 9, BytesDone: 1 << 30, Bytes: 10 << 30},
				},
			},
		},
	}
}

// TestDeepCopyIndependent guards that the generated deepcopy exists and
// copies every reference: changing the copy anywhere leaves the original
// as it was.
func TestDeepCopyIndependent(t *testing.T) {
	orig, want := populated(), populated()
	cp := orig.DeepCopy()
	if !reflect.DeepEqual(cp, orig) {
		t.Fatalf("copy differs from original:\n%+v\n%+v", cp, orig)
	}

	cp.Labels["team"] = "changed"
	cp.Spec.ImageSelectors[0].ImageRegex = "changed"
	cp.Spec.Platforms[0] = "linux/s390x"
	cp.Spec.NamespaceSelector.MatchLabels["hermes.dev/lazy"] = "false"
	cp.Spec.NamespaceSelector.MatchExpressions[0].Values[0] = "changed"
	cp.Spec.Retention.Duration = time.Hour
	cp.Spec.Build.MinLayerSize.Add(resource.MustParse("1"))
	cp.Spec.Build.SpanSize.Add(resource.MustParse("1Mi"))
	cp.Status.Conditions[0].Reason = ReasonBuildFailed
	cp.Status.Conditions[0].LastTransitionTime.Time = time.Time{}
	cp.Status.Images[0].Phase = PhaseFailed
	cp.Status.Images[1].Progress.LayersDone = 9
	if !reflect.DeepEqual(orig, want) {
		t.Fatalf("changing the copy changed the original:\n%+v\nwant\n%+v", orig, want)
	}

	list := &HermesPolicyList{Items: []HermesPolicy{*populated()}}
	lcp := list.DeepCopyObject().(*HermesPolicyList)
	lcp.Items[0].Spec.Platforms[1] = "changed"
	if list.Items[0].Spec.Platforms[1] != "linux/arm64/v8" {
		t.Fatal("changing the list copy changed the original list")
	}
	if got := (*HermesPolicy)(nil).DeepCopy(); got != nil {
		t.Fatalf("DeepCopy of nil = %v", got)
	}
}

// TestAddToScheme checks both kinds are registered under hermes.dev/v1alpha1.
func TestAddToScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for obj, kind := range map[runtime.Object]string{&HermesPolicy{}: "HermesPolicy", &HermesPolicyList{}: "HermesPolicyList"} {
		gvks, _, err := s.ObjectKinds(obj)
		if err != nil {
			t.Fatal(err)
		}
		if want := SchemeGroupVersion.WithKind(kind); len(gvks) != 1 || gvks[0] != want {
			t.Errorf("kinds of %T = %v, want %v", obj, gvks, want)
		}
	}
	if got := Resource("hermespolicies").String(); got != "hermespolicies.hermes.dev" {
		t.Errorf("Resource = %q", got)
	}
	if got := Kind("HermesPolicy").String(); got != "HermesPolicy.hermes.dev" {
		t.Errorf("Kind = %q", got)
	}
}
