package api

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/tests/harness"
)

const crdName = "hermespolicies.hermes.dev"

var gvr = v1alpha1.SchemeGroupVersion.WithResource("hermespolicies")

// TestHermesPolicyCRD installs the generated CRD into a real kube-apiserver
// and checks what users and the controller rely on: the sample is accepted
// and defaulted, each validation rule rejects what it should with a message
// that says why, kubectl shows the printer columns, and status is written
// through the status subresource only.
func TestHermesPolicyCRD(t *testing.T) {
	k := harness.StartKube(t)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	crdDir := filepath.Join(root, "manifests", "crd")
	sample := filepath.Join(root, "manifests", "samples", "hermespolicy.yaml")

	if out := k.Kubectl(t, "kustomize", crdDir); !strings.Contains(out, "name: "+crdName) {
		t.Fatalf("kubectl kustomize %s does not render %s:\n%s", crdDir, crdName, out)
	}
	k.Kubectl(t, "apply", "--server-side", "-f", filepath.Join(crdDir, "hermes.dev_hermespolicies.yaml"))
	harness.WaitFor(t, k.APIServer, time.Minute, "CRD Established", func() error {
		out, err := k.KubectlErr(t, "get", "crd", crdName, "-o", `jsonpath={.status.conditions[?(@.type=="Established")].status}`)
		if err == nil && out != "True" {
			err = fmt.Errorf("Established=%q", out)
		}
		return err
	})

	cfg, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	policies := dyn.Resource(gvr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if err := create(t, k, sample); err != nil {
		t.Fatalf("sample %s rejected: %v", sample, err)
	}
	name := strings.TrimSpace(k.Kubectl(t, "get", "-f", sample, "-o", "jsonpath={.metadata.name}"))

	t.Run("sample defaults", func(t *testing.T) {
		p := get(ctx, t, policies, name)
		if p.Spec.Retention == nil || p.Spec.Retention.Duration != 168*time.Hour {
			t.Errorf("retention = %v, want the default 168h", p.Spec.Retention)
		}
		if out := k.Kubectl(t, "get", "hp", name, "-o", "jsonpath={.spec.retention}"); out != "168h" {
			t.Errorf("kubectl get: retention %q, want 168h", out)
		}
		if len(p.Spec.ImageSelectors) != 2 || !reflect.DeepEqual(p.Spec.Platforms, []string{"linux/amd64", "linux/arm64/v8"}) ||
			p.Spec.Build == nil || p.Spec.Build.SpanSize.String() != "4Mi" || p.Spec.Build.MinLayerSize.String() != "10Mi" ||
			p.Spec.NamespaceSelector.MatchLabels["hermes.dev/lazy-start"] != "true" {
			t.Errorf("sample read back as %+v", p.Spec)
		}
	})

	t.Run("kubectl explain", func(t *testing.T) {
		// The field descriptions are the Go doc comments; the OpenAPI
		// document may trail the CRD becoming Established by a moment.
		var out string
		harness.WaitFor(t, k.APIServer, 30*time.Second, "explain", func() error {
			var err error
			out, err = k.KubectlErr(t, "explain", "hp.spec.imageSelectors.imageRegex")
			return err
		})
		if !strings.Contains(out, "RE2 regular expression") || !strings.Contains(out, "docker.io/library/nginx:1.27") {
			t.Errorf("kubectl explain does not show the imageRegex doc comment:\n%s", out)
		}
	})

	t.Run("rejected", func(t *testing.T) {
		for _, c := range []struct {
			name, spec string
			want       []string // all in kubectl's error
		}{
			{"no imageSelectors", `{"paused": true}`, []string{"spec.imageSelectors: Required value"}},
			{"empty imageSelectors", `{"imageSelectors": []}`, []string{"spec.imageSelectors", "should have at least 1 items"}},
			{"65 imageSelectors", selectors(65), []string{"spec.imageSelectors", "must have at most 64 items"}},
			{"empty imageRegex", `{"imageSelectors": [{"imageRegex": ""}]}`, []string{"spec.imageSelectors[0].imageRegex", "should be at least 1 chars long"}},
			{"imageRegex over 1024", fmt.Sprintf(`{"imageSelectors": [{"imageRegex": %q}]}`, strings.Repeat("a", 1025)), []string{"spec.imageSelectors[0].imageRegex", "may not be more than 1024"}},
			{"imageRegex that does not compile", `{"imageSelectors": [{"imageRegex": "ok"}, {"imageRegex": "("}]}`, []string{"spec.imageSelectors[1].imageRegex", "missing closing )", "imageRegex must be a valid RE2 regular expression"}},
			{"imageRegex with Perl lookahead", `{"imageSelectors": [{"imageRegex": "nginx(?=:)"}]}`, []string{"spec.imageSelectors[0].imageRegex", "invalid or unsupported Perl syntax", "imageRegex must be a valid RE2 regular expression"}},
			{"uppercase platform", `{"imageSelectors": [{"imageRegex": "."}], "platforms": ["Linux/AMD64"]}`, []string{"spec.platforms[0]", "should match"}},
			{"platform without arch", `{"imageSelectors": [{"imageRegex": "."}], "platforms": ["linux"]}`, []string{"spec.platforms[0]", "should match"}},
			{"platform with 4 parts", `{"imageSelectors": [{"imageRegex": "."}], "platforms": ["linux/arm64/v8/x"]}`, []string{"spec.platforms[0]", "should match"}},
			{"duplicate platform", `{"imageSelectors": [{"imageRegex": "."}], "platforms": ["linux/amd64", "linux/amd64"]}`, []string{"spec.platforms[1]", "Duplicate value"}},
			{"17 platforms", platforms(17), []string{"spec.platforms", "must have at most 16 items"}},
			{"negative retention", `{"imageSelectors": [{"imageRegex": "."}], "retention": "-1h"}`, []string{"spec.retention", "retention must be a non-negative duration such as 168h"}},
			{"retention not a duration", `{"imageSelectors": [{"imageRegex": "."}], "retention": "7d"}`, []string{"spec.retention", "retention must be a non-negative duration such as 168h"}},
			{"spanSize below 32Ki", `{"imageSelectors": [{"imageRegex": "."}], "build": {"spanSize": "16Ki"}}`, []string{"spec.build.spanSize", "spanSize must be at least 32Ki"}},
			{"spanSize below 32Ki as integer", `{"imageSelectors": [{"imageRegex": "."}], "build": {"spanSize": 32767}}`, []string{"spec.build.spanSize", "spanSize must be at least 32Ki"}},
			{"spanSize not a quantity", `{"imageSelectors": [{"imageRegex": "."}], "build": {"spanSize": "big"}}`, []string{"spec.build.spanSize", "should match"}},
			{"negative minLayerSize", `{"imageSelectors": [{"imageRegex": "."}], "build": {"minLayerSize": "-1Mi"}}`, []string{"spec.build.minLayerSize", "minLayerSize must not be negative"}},
			{"negative minLayerSize as integer", `{"imageSelectors": [{"imageRegex": "."}], "build": {"minLayerSize": -1}}`, []string{"spec.build.minLayerSize", "minLayerSize must not be negative"}},
		} {
			t.Run(c.name, func(t *testing.T) {
				err := create(t, k, manifest(t, "bad", c.spec))
				if err == nil {
					k.Kubectl(t, "delete", "hp", "bad")
					t.Fatalf("accepted %s", c.spec)
				}
				t.Log(err)
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error does not say %q:\n%v", w, err)
					}
				}
			})
		}
	})

	t.Run("accepted edges", func(t *testing.T) {
		for i, c := range []struct {
			spec, want string // want: retention and spanSize as read back
		}{
			{`{"imageSelectors": [{"imageRegex": "."}], "platforms": ["linux/amd64/v3", "windows/amd64"], "retention": "0s", "build": {"spanSize": 32768, "minLayerSize": 0}}`, "0s 32768"},
			{`{"imageSelectors": [{"imageRegex": "^ghcr\\.io/(?P<org>[^/]+)/"}, {"imageRegex": "\\d+[[:alpha:]]"}], "retention": "36h30m", "build": {"spanSize": "32Ki", "minLayerSize": "0"}, "namespaceSelector": {}}`, "36h30m 32Ki"},
		} {
			n := fmt.Sprintf("edge-%d", i)
			if err := create(t, k, manifest(t, n, c.spec)); err != nil {
				t.Errorf("rejected %s: %v", c.spec, err)
				continue
			}
			if got := k.Kubectl(t, "get", "hp", n, "-o", "jsonpath={.spec.retention} {.spec.build.spanSize}"); got != c.want {
				t.Errorf("%s read back as %q, want %q", n, got, c.want)
			}
		}
	})

	t.Run("status subresource", func(t *testing.T) {
		p := get(ctx, t, policies, name)
		gen := p.Generation
		p.Spec.Paused = true // ignored: the status subresource writes status only
		p.Status = status(gen)
		want := p.Status
		updateStatus(ctx, t, policies, p)

		got := get(ctx, t, policies, name)
		if !equality.Semantic.DeepEqual(got.Status, want) {
			t.Errorf("status read back as\n%+v\nwant\n%+v", got.Status, want)
		}
		if got.Spec.Paused || got.Generation != gen {
			t.Errorf("status update changed the spec: paused=%v generation %d -> %d", got.Spec.Paused, gen, got.Generation)
		}

		out := k.Kubectl(t, "get", "hp", name)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !reflect.DeepEqual(strings.Fields(lines[0]), []string{"NAME", "PAUSED", "READY", "BUILDING", "FAILED", "AGE"}) {
			t.Fatalf("kubectl get hp:\n%s", out)
		}
		if row := strings.Fields(lines[1]); len(row) != 6 || !reflect.DeepEqual(row[:5], []string{name, "false", "2", "1", "0"}) {
			t.Errorf("kubectl get hp row %q, want %s false 2 1 0 AGE", lines[1], name)
		}
		if out := k.Kubectl(t, "get", "hermes", "-o", "name"); !strings.Contains(out, "hermespolicy.hermes.dev/"+name) {
			t.Errorf("kubectl get hermes (the category) does not list the policy:\n%s", out)
		}
	})

	t.Run("invalid status rejected", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			change func(*v1alpha1.HermesPolicyStatus)
			want   string
		}{
			{"unknown phase", func(s *v1alpha1.HermesPolicyStatus) { s.Images[0].Phase = "Done" },
				`status.images[0].phase: Unsupported value: "Done": supported values: "Pending", "Building", "Ready", "Failed", "Skipped"`},
			{"257 images", func(s *v1alpha1.HermesPolicyStatus) {
				for len(s.Images) < 257 {
					s.Images = append(s.Images, s.Images[0])
				}
			}, "status.images: Too many: 257: must have at most 256 items"},
			{"two Ready conditions", func(s *v1alpha1.HermesPolicyStatus) { s.Conditions = append(s.Conditions, s.Conditions[0]) },
				`status.conditions[1]: Duplicate value: {"type":"Ready"}`},
		} {
			t.Run(c.name, func(t *testing.T) {
				p := get(ctx, t, policies, name)
				p.Status = status(p.Generation)
				c.change(&p.Status)
				_, err := policies.UpdateStatus(ctx, toUnstructured(t, p), metav1.UpdateOptions{})
				if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
					t.Errorf("update status: got %v, want Invalid saying %s", err, c.want)
				}
			})
		}
	})
}

// create runs `kubectl create -f file` and returns its error. Errors other
// than a rejection are retried for a while: the first requests after a CRD
// becomes Established may be throttled (429) or wait for discovery.
func create(t *testing.T, k *harness.Kube, file string) error {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := k.KubectlErr(t, "create", "-f", file)
		if err == nil || strings.Contains(err.Error(), "is invalid") || time.Now().After(deadline) {
			return err
		}
		t.Logf("kubectl create -f %s (retrying): %v", filepath.Base(file), err)
		time.Sleep(250 * time.Millisecond)
	}
}

// manifest writes a HermesPolicy named name with the given spec (JSON, which
// is YAML too) to a file and returns its path.
func manifest(t *testing.T, name, spec string) string {
	t.Helper()
	doc := fmt.Sprintf("apiVersion: %s\nkind: HermesPolicy\nmetadata:\n  name: %s\nspec: %s\n", v1alpha1.SchemeGroupVersion, name, spec)
	p := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// status is what a controller might write for the sample policy at
// generation gen: three images on two platforms, one of them building.
func status(gen int64) v1alpha1.HermesPolicyStatus {
	at := metav1.NewTime(time.Now().Truncate(time.Second))
	return v1alpha1.HermesPolicyStatus{
		ObservedGeneration: gen,
		Conditions: []metav1.Condition{{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonBuilding,
			Message: "1 of 3 images building", ObservedGeneration: gen, LastTransitionTime: at,
		}},
		Counts: v1alpha1.ImageCounts{Total: 3, Ready: 2, Building: 1},
		Images: []v1alpha1.ImageStatus{
			{Image: "docker.io/library/nginx:1.27", Digest: "sha256:" + strings.Repeat("a", 64), Platform: "linux/amd64",
				Phase: v1alpha1.PhaseReady, IndexDigest: "sha256:" + strings.Repeat("b", 64), LastTransitionTime: at},
			{Image: "docker.io/library/nginx:1.27", Digest: "sha256:" + strings.Repeat("c", 64), Platform: "linux/arm64/v8",
				Phase: v1alpha1.PhaseReady, IndexDigest: "sha256:" + strings.Repeat("d", 64), LastTransitionTime: at},
			{Image: "ghcr.io/example/inference:v2", Digest: "sha256:" + strings.Repeat("e", 64), Platform: "linux/amd64",
				Phase: v1alpha1.PhaseBuilding, LastTransitionTime: at,
				Progress: &v1alpha1.BuildProgress{LayersDone: 2, Layers: 7, BytesDone: 300 << 20, Bytes: 9 << 30}},
		},
	}
}

func selectors(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf(`{"imageRegex": "image-%d"}`, i)
	}
	return `{"imageSelectors": [` + strings.Join(s, ", ") + `]}`
}

func platforms(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf(`"linux/arch%d"`, i)
	}
	return `{"imageSelectors": [{"imageRegex": "."}], "platforms": [` + strings.Join(s, ", ") + `]}`
}

func get(ctx context.Context, t *testing.T, r dynamic.NamespaceableResourceInterface, name string) *v1alpha1.HermesPolicy {
	t.Helper()
	u, err := r.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	var p v1alpha1.HermesPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func updateStatus(ctx context.Context, t *testing.T, r dynamic.NamespaceableResourceInterface, p *v1alpha1.HermesPolicy) {
	t.Helper()
	if _, err := r.UpdateStatus(ctx, toUnstructured(t, p), metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status: %v", err)
	}
}

func toUnstructured(t *testing.T, p *v1alpha1.HermesPolicy) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(v1alpha1.SchemeGroupVersion.WithKind("HermesPolicy"))
	return u
}
