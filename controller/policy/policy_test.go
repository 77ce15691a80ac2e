package policy

import (
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/registry/names"
)

var defaults = Defaults{Platforms: []ocispec.Platform{{OS: "linux", Architecture: "amd64"}}, Settings: builder.DefaultSettings()}

func policy(regexes ...string) *v1alpha1.HermesPolicy {
	p := &v1alpha1.HermesPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 3}}
	for _, r := range regexes {
		p.Spec.ImageSelectors = append(p.Spec.ImageSelectors, v1alpha1.ImageSelector{ImageRegex: r})
	}
	return p
}

func matches(t *testing.T, p *Policy, raw string) bool {
	t.Helper()
	named, err := names.ParseReference(raw)
	if err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return p.MatchesImage(raw, named.String())
}

func TestMatchNormalizedAndRaw(t *testing.T) {
	p := Compile(policy(`^docker\.io/library/nginx:`, `^registry:5000/app@sha256:`), defaults)
	if len(p.Invalid) != 0 || !p.Active() {
		t.Fatalf("compiled %+v", p)
	}
	digest := "sha256:" + strings.Repeat("a", 64)
	for raw, want := range map[string]bool{
		"nginx":                             true, // docker.io/library/nginx:latest
		"nginx:1.27":                        true,
		"docker.io/library/nginx:1.27":      true,
		"index.docker.io/library/nginx:1.2": true,
		"library/nginx":                     true,
		"ghcr.io/library/nginx:1.27":        false,
		"registry:5000/app@" + digest:       true,
		"registry:5000/app:v1":              false,
		"nginxinc/nginx-unprivileged":       false,
	} {
		if got := matches(t, p, raw); got != want {
			t.Errorf("%s: matched %v, want %v", raw, got, want)
		}
	}
	// The raw string counts too: a selector written for what Pods say.
	raw := Compile(policy(`^nginx:1\.27$`), defaults)
	if !matches(t, raw, "nginx:1.27") || matches(t, raw, "nginx:1.28") {
		t.Error("raw-string selector")
	}
}

func TestInvalidSelectorKeepsOthers(t *testing.T) {
	p := Compile(policy(`(`, `^docker\.io/library/redis:`, ``, strings.Repeat("a", 2000)), defaults)
	if len(p.Invalid) != 3 || p.Invalid[0].Index != 0 || !strings.Contains(p.Invalid[0].String(), "missing closing )") || p.Invalid[1].Err != "empty" {
		t.Fatalf("invalid %v", p.Invalid)
	}
	if !matches(t, p, "redis:7") || matches(t, p, "nginx") {
		t.Error("the valid selector stopped working")
	}
	if onlyBad := Compile(policy(`[`), defaults); onlyBad.Active() || matches(t, onlyBad, "nginx") {
		t.Error("a policy without a usable selector matches")
	}
}

func TestSpec(t *testing.T) {
	p := policy(`.`)
	p.Spec.Platforms = []string{"linux/arm64", "linux/arm64/v8", "linux/amd64", "not a platform!"}
	p.Spec.Retention = &metav1.Duration{Duration: time.Hour}
	min, span := resource.MustParse("0"), resource.MustParse("1Mi")
	p.Spec.Build = &v1alpha1.BuildSettings{MinLayerSize: &min, SpanSize: &span}
	c := Compile(p, defaults)
	var plats []string
	for _, pl := range c.Platforms {
		plats = append(plats, pl.OS+"/"+pl.Architecture+"/"+pl.Variant)
	}
	if strings.Join(plats, ",") != "linux/arm64/,linux/amd64/" {
		t.Errorf("platforms %v (arm64 and arm64/v8 are one platform)", plats)
	}
	if len(c.Problems) != 1 || !strings.Contains(c.Problems[0], "not a platform") {
		t.Errorf("problems %v", c.Problems)
	}
	if c.Retention != time.Hour || c.Settings.MinLayerSize != 0 || c.Settings.SpanSize != 1<<20 || c.Settings.AlignFilesFrom != 256<<10 {
		t.Errorf("retention %s settings %+v", c.Retention, c.Settings)
	}
	if c.Generation != 3 || c.Name != "p" {
		t.Errorf("identity %s/%d", c.Name, c.Generation)
	}
	bare := Compile(policy(`.`), defaults)
	if len(bare.Platforms) != 1 || bare.Platforms[0].Architecture != "amd64" || bare.Retention != DefaultRetention || bare.Settings != builder.DefaultSettings() {
		t.Errorf("defaults: %+v", bare)
	}
	small := resource.MustParse("1Ki")
	p.Spec.Build = &v1alpha1.BuildSettings{SpanSize: &small}
	if c := Compile(p, defaults); c.Settings.SpanSize != builder.DefaultSpanSize || len(c.Problems) != 2 {
		t.Errorf("span below 32Ki: %+v %v", c.Settings, c.Problems)
	}
	p.Spec.Paused = true
	if Compile(p, defaults).Active() {
		t.Error("paused policy is active")
	}
}

func TestNamespaces(t *testing.T) {
	p := policy(`.`)
	if !Compile(p, defaults).MatchesNamespace(nil) {
		t.Error("no selector: every namespace")
	}
	p.Spec.NamespaceSelector = &metav1.LabelSelector{}
	if !Compile(p, defaults).MatchesNamespace(map[string]string{"a": "b"}) {
		t.Error("empty selector: every namespace")
	}
	p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"hermes": "on"}}
	c := Compile(p, defaults)
	if !c.MatchesNamespace(map[string]string{"hermes": "on", "x": "y"}) || c.MatchesNamespace(map[string]string{"hermes": "off"}) || c.MatchesNamespace(nil) {
		t.Error("matchLabels")
	}
	p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Bogus"}}}
	if c := Compile(p, defaults); c.MatchesNamespace(map[string]string{"k": "v"}) || len(c.Problems) != 1 {
		t.Errorf("a selector that cannot be read must match nothing: %v", c.Problems)
	}
}

func TestPodImages(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers:      []corev1.Container{{Image: "busybox"}},
		Containers:          []corev1.Container{{Image: "nginx:1.27"}, {Image: "busybox"}, {Image: ""}},
		EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Image: "debug:1"}}},
	}}
	if got := strings.Join(PodImages(pod), ","); got != "busybox,nginx:1.27,debug:1" {
		t.Errorf("images %s", got)
	}
}

// FuzzMatch: whatever a policy says and whatever a Pod references, compiling
// and matching never panic.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{{`^docker\.io/`, "nginx"}, {`(`, "a:b@sha256:x"}, {`\p{Greek}+`, "registry:5000/app"}, {`a{1000}`, "[::1]:5000/x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, regex, image string) {
		p := Compile(policy(regex, `^ok$`), defaults)
		normalized := image
		if named, err := names.ParseReference(image); err == nil {
			normalized = named.String()
		}
		_ = p.MatchesImage(image, normalized)
		_ = p.MatchesNamespace(map[string]string{image: regex})
	})
}
