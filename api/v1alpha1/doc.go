// Package v1alpha1 holds the hermes.dev/v1alpha1 API: the cluster-scoped
// HermesPolicy that picks which images Hermes indexes. This module depends on
// apimachinery only, so other projects can import the types.
//
// The types themselves arrive with the controller; until then this package
// fixes the group and version every component agrees on.
package v1alpha1

const (
	// Group is the API group of Hermes' custom resources.
	Group = "hermes.dev"
	// Version is the API version of this package.
	Version = "v1alpha1"
)
