// Package v1alpha1 holds the hermes.dev/v1alpha1 API: the cluster-scoped
// HermesPolicy that picks which images Hermes indexes, and the status through
// which the controller reports what it built. This module depends on
// apimachinery only, so other projects can import the types.
//
// Key terms: an image selector is an RE2 regular expression over image
// references; an artifact is the SOCI index (and its zTOCs) that Hermes keeps
// in its cache registry as a referrer of one platform's image manifest.
//
// zz_generated.deepcopy.go and the CRD in manifests/crd are generated from the
// markers here by controller-gen (`make generate`); never edit them by hand.
//
// +kubebuilder:object:generate=true
// +groupName=hermes.dev
package v1alpha1

const (
	// Group is the API group of Hermes' custom resources.
	Group = "hermes.dev"
	// Version is the API version of this package.
	Version = "v1alpha1"
)
