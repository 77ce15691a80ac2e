// Package policy turns HermesPolicy objects into matchers: which images of
// which Pods a policy selects, for which platforms, with which build
// settings. It is pure (no API calls): the controller feeds it policies,
// namespaces and Pods.
//
// An image selector's imageRegex is RE2 (Go's regexp), unanchored unless
// the user anchors it, matched against both the normalized reference
// (docker.io/library/nginx:1.27, as registry/names normalizes it) and the
// string the Pod wrote (nginx:1.27); selectors are ORed. A selector that
// does not compile (the CRD checks RE2 syntax too, but an older CRD or a
// server without that rule lets one through) is reported in Invalid and
// matches nothing; the policy's other selectors keep working.
package policy

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller/builder"
)

// DefaultRetention is how long an artifact is kept after no Pod uses it
// when the policy does not say (the CRD defaults it too).
const DefaultRetention = 7 * 24 * time.Hour

// InvalidSelector is a selector that could not be used.
type InvalidSelector struct {
	Index int    // position in spec.imageSelectors
	Regex string // as written
	Err   string // why
}

func (s InvalidSelector) String() string {
	return fmt.Sprintf("imageSelectors[%d] %q: %s", s.Index, s.Regex, s.Err)
}

// Policy is a compiled HermesPolicy.
type Policy struct {
	Name       string
	Generation int64
	Paused     bool
	// Platforms to index; never empty (the controller's default fills it).
	Platforms []ocispec.Platform
	// Settings are the builder settings for this policy's images.
	Settings builder.Settings
	// Retention: how long artifacts are kept after no Pod uses them.
	Retention time.Duration
	// Invalid lists selectors and fields that could not be used; the rest
	// of the policy still applies.
	Invalid []InvalidSelector
	// Problems are spec fields that could not be used (other than
	// selectors), each a message; the field's default applies instead.
	Problems []string

	selectors  []*regexp.Regexp
	namespaces labels.Selector // nil: every namespace
}

// Defaults are what a policy gets for what it leaves out.
type Defaults struct {
	// Platforms when spec.platforms is empty: the controller's own.
	Platforms []ocispec.Platform
	// Settings before spec.build is applied.
	Settings builder.Settings
}

// maxRegex bounds a selector's length (the CRD's limit too), which bounds
// the work of compiling it.
const maxRegex = 1024

// Compile compiles p. It never fails: what cannot be used is reported in
// Invalid or Problems and left out.
func Compile(p *v1alpha1.HermesPolicy, d Defaults) *Policy {
	out := &Policy{Name: p.Name, Generation: p.Generation, Paused: p.Spec.Paused, Settings: d.Settings, Retention: DefaultRetention}
	for i, s := range p.Spec.ImageSelectors {
		if len(s.ImageRegex) > maxRegex {
			out.Invalid = append(out.Invalid, InvalidSelector{Index: i, Regex: s.ImageRegex[:64] + "…", Err: fmt.Sprintf("longer than %d characters", maxRegex)})
			continue
		}
		if s.ImageRegex == "" {
			out.Invalid = append(out.Invalid, InvalidSelector{Index: i, Err: "empty"})
			continue
		}
		re, err := regexp.Compile(s.ImageRegex)
		if err != nil {
			out.Invalid = append(out.Invalid, InvalidSelector{Index: i, Regex: s.ImageRegex, Err: err.Error()})
			continue
		}
		out.selectors = append(out.selectors, re)
	}
	for _, s := range p.Spec.Platforms {
		pl, err := platforms.Parse(s)
		if err != nil {
			out.Problems = append(out.Problems, fmt.Sprintf("platform %q: %v", s, err))
			continue
		}
		pl = platforms.Normalize(pl)
		if !slices.ContainsFunc(out.Platforms, func(q ocispec.Platform) bool { return platforms.Format(q) == platforms.Format(pl) }) {
			out.Platforms = append(out.Platforms, pl)
		}
	}
	if len(out.Platforms) == 0 {
		out.Platforms = append(out.Platforms, d.Platforms...)
	}
	if p.Spec.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.NamespaceSelector)
		if err != nil {
			// Matching no namespace is the safe reading of a selector that
			// cannot be understood.
			out.Problems = append(out.Problems, fmt.Sprintf("namespaceSelector: %v (matching no namespace)", err))
			sel = labels.Nothing()
		}
		if !sel.Empty() {
			out.namespaces = sel
		}
	}
	if r := p.Spec.Retention; r != nil {
		if r.Duration < 0 {
			out.Problems = append(out.Problems, fmt.Sprintf("retention %s is negative (using %s)", r.Duration, DefaultRetention))
		} else {
			out.Retention = r.Duration
		}
	}
	if b := p.Spec.Build; b != nil {
		if q := b.MinLayerSize; q != nil {
			if v, ok := q.AsInt64(); ok && v >= 0 {
				out.Settings.MinLayerSize = v
			} else {
				out.Problems = append(out.Problems, fmt.Sprintf("build.minLayerSize %s is not a non-negative byte count", q))
			}
		}
		if q := b.SpanSize; q != nil {
			if v, ok := q.AsInt64(); ok && v >= 1<<15 {
				out.Settings = out.Settings.WithSpanSize(v)
			} else {
				out.Problems = append(out.Problems, fmt.Sprintf("build.spanSize %s is not a byte count of at least 32Ki", q))
			}
		}
	}
	return out
}

// Active reports whether the policy asks for builds now.
func (p *Policy) Active() bool { return !p.Paused && len(p.selectors) > 0 }

// MatchesNamespace reports whether Pods in a namespace with these labels
// are the policy's to look at.
func (p *Policy) MatchesNamespace(nsLabels map[string]string) bool {
	return p.namespaces == nil || p.namespaces.Matches(labels.Set(nsLabels))
}

// MatchesImage reports whether an image, as the Pod wrote it (raw) and
// normalized, is selected.
func (p *Policy) MatchesImage(raw, normalized string) bool {
	for _, re := range p.selectors {
		if re.MatchString(normalized) || (raw != normalized && re.MatchString(raw)) {
			return true
		}
	}
	return false
}

// PodImages returns the images a Pod runs, each once, in the order they
// appear: init containers, containers, ephemeral containers.
func PodImages(pod *corev1.Pod) []string {
	var out []string
	add := func(img string) {
		if img != "" && !slices.Contains(out, img) {
			out = append(out, img)
		}
	}
	for _, c := range pod.Spec.InitContainers {
		add(c.Image)
	}
	for _, c := range pod.Spec.Containers {
		add(c.Image)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		add(c.Image)
	}
	return out
}

// Selectors is the number of usable selectors.
func (p *Policy) Selectors() int { return len(p.selectors) }
