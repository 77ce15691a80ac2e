package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons the controller sets on a HermesPolicy.
const (
	// ConditionReady is True when every image the policy matches has an
	// index in the cache registry (or was skipped), and False otherwise; its
	// reason says why.
	ConditionReady = "Ready"

	// ReasonAllReady: every matching image is Ready or Skipped.
	ReasonAllReady = "AllImagesReady"
	// ReasonBuilding: at least one matching image is Pending or Building.
	ReasonBuilding = "Building"
	// ReasonBuildFailed: at least one matching image is Failed.
	ReasonBuildFailed = "BuildFailed"
	// ReasonInvalidSelector: an imageRegex is not a valid RE2 expression (the
	// CRD rejects those, but objects stored before the rule or written past
	// it may hold one), or the namespaceSelector is invalid; the policy
	// matches nothing.
	ReasonInvalidSelector = "InvalidSelector"
	// ReasonPaused: spec.paused is set; no new builds start.
	ReasonPaused = "Paused"
	// ReasonNoImages: no running Pod uses an image the policy matches.
	ReasonNoImages = "NoMatchingImages"
)

// HermesPolicy says which images Hermes builds SOCI indexes for, so that Pods
// using them start lazily. It is cluster-scoped: the images of Pods in any
// namespace (or those picked by namespaceSelector) are matched.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=hp,categories=hermes
// +kubebuilder:printcolumn:name="Paused",type=boolean,JSONPath=`.spec.paused`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.counts.ready`
// +kubebuilder:printcolumn:name="Building",type=integer,JSONPath=`.status.counts.building`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.counts.failed`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HermesPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec selects the images to index and how to build their indexes.
	// +required
	Spec HermesPolicySpec `json:"spec"`
	// status is what the controller observed and built for this policy.
	// +optional
	Status HermesPolicyStatus `json:"status,omitempty"`
}

// HermesPolicyList is a list of HermesPolicy objects.
//
// +kubebuilder:object:root=true
type HermesPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the policies.
	Items []HermesPolicy `json:"items"`
}

// HermesPolicySpec selects images and sets how their indexes are built.
type HermesPolicySpec struct {
	// imageSelectors pick the images to index. An image matches the policy
	// when any selector matches it (selectors are ORed).
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	ImageSelectors []ImageSelector `json:"imageSelectors"`

	// platforms to index, each as os/arch or os/arch/variant in lowercase,
	// for example linux/amd64 or linux/arm64/v8. Each platform of a
	// multi-platform image has its own manifest and its own index. Empty
	// means the platform the controller runs on.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$`
	// +kubebuilder:validation:items:MaxLength=64
	Platforms []string `json:"platforms,omitempty"`

	// paused stops new builds for this policy; indexes already built are
	// kept and still used by nodes.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// namespaceSelector limits the policy to images of Pods in namespaces
	// whose labels match it. Absent or empty matches every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// retention is how long an index is kept in the cache registry after the
	// last Pod using its image is gone, as a Go duration such as 168h or
	// 36h30m. 0s removes it as soon as no Pod uses it. Defaults to 168h (7 days).
	// +optional
	// +kubebuilder:default="168h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="retention must be a non-negative duration such as 168h"
	Retention *metav1.Duration `json:"retention,omitempty"`

	// build tunes how indexes are built. Changing it makes the controller
	// build new indexes for images that already have one.
	// +optional
	Build *BuildSettings `json:"build,omitempty"`
}

// ImageSelector matches image references.
type ImageSelector struct {
	// imageRegex is an RE2 regular expression (Go regexp syntax). It is
	// matched against both the normalized reference, such as
	// docker.io/library/nginx:1.27, and the image string as the Pod wrote
	// it, such as nginx:1.27; either match selects the image. It is not
	// anchored: use ^ and $ to match a whole reference. The API server
	// rejects an expression that does not compile; should one reach the
	// controller anyway, the policy matches nothing and its Ready condition
	// is False with reason InvalidSelector.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="''.matches(self) || !''.matches(self)",message="imageRegex must be a valid RE2 regular expression"
	ImageRegex string `json:"imageRegex"`
}

// BuildSettings tune the SOCI indexes the controller builds.
type BuildSettings struct {
	// minLayerSize: layers whose compressed size is below this get no zTOC
	// and are fetched whole when a container starts. 0 indexes every layer.
	// Defaults to 10Mi.
	// +optional
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : !quantity(self).isLessThan(quantity('0'))",message="minLayerSize must not be negative"
	MinLayerSize *resource.Quantity `json:"minLayerSize,omitempty"`

	// spanSize is the number of uncompressed bytes between two checkpoints
	// of a layer's zTOC: the most a container reads beyond what it needs for
	// one access. Smaller spans mean finer reads and bigger zTOCs. At least
	// 32Ki; defaults to 4Mi.
	// +optional
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 32768 : quantity(self).compareTo(quantity('32Ki')) >= 0",message="spanSize must be at least 32Ki"
	SpanSize *resource.Quantity `json:"spanSize,omitempty"`
}

// HermesPolicyStatus is what the controller observed and built for a policy.
type HermesPolicyStatus struct {
	// observedGeneration is the metadata.generation of the spec this status
	// describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions describe the policy's state. Type Ready is True when every
	// matching image has an index; its reason is one of AllImagesReady,
	// Building, BuildFailed, InvalidSelector, Paused or NoMatchingImages.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// counts are the numbers of matching images per phase, each image
	// counted once per platform. They cover every image, including those
	// beyond the images list's limit.
	// +optional
	Counts ImageCounts `json:"counts,omitempty"`

	// images are the matching images, one entry per image and platform,
	// sorted by image then platform. At most 256 are listed; counts cover
	// the rest.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	Images []ImageStatus `json:"images,omitempty"`
}

// ImageCounts are the numbers of matching images in each phase.
type ImageCounts struct {
	// total is the number of matching images, per platform.
	Total int32 `json:"total"`
	// pending images wait for a build to start.
	Pending int32 `json:"pending"`
	// building images have a build running.
	Building int32 `json:"building"`
	// ready images have an index in the cache registry.
	Ready int32 `json:"ready"`
	// failed images' last build failed; see their message.
	Failed int32 `json:"failed"`
	// skipped images need no index (for example, no layer reaches
	// minLayerSize).
	Skipped int32 `json:"skipped"`
}

// ImagePhase is where an image stands in its build.
//
// +kubebuilder:validation:Enum=Pending;Building;Ready;Failed;Skipped
type ImagePhase string

// The phases of an image.
const (
	// PhasePending: matched; no build has started yet.
	PhasePending ImagePhase = "Pending"
	// PhaseBuilding: a build is running; progress tells how far it is.
	PhaseBuilding ImagePhase = "Building"
	// PhaseReady: the cache registry holds an index for the image.
	PhaseReady ImagePhase = "Ready"
	// PhaseFailed: the last build failed; message says why.
	PhaseFailed ImagePhase = "Failed"
	// PhaseSkipped: the image needs no index; message says why.
	PhaseSkipped ImagePhase = "Skipped"
)

// ImageStatus is the state of one image, on one platform, that a policy
// matches.
type ImageStatus struct {
	// image is the normalized reference the policy matched, such as
	// docker.io/library/nginx:1.27.
	Image string `json:"image"`
	// digest is the digest of the platform's image manifest: the subject of
	// the SOCI index.
	Digest string `json:"digest"`
	// platform is os/arch or os/arch/variant, such as linux/arm64/v8.
	Platform string `json:"platform"`
	// phase is one of Pending, Building, Ready, Failed or Skipped.
	Phase ImagePhase `json:"phase"`
	// indexDigest is the digest of the SOCI index manifest in the cache
	// registry, once built.
	// +optional
	IndexDigest string `json:"indexDigest,omitempty"`
	// message says why the image is Failed or Skipped, in human terms.
	// +optional
	Message string `json:"message,omitempty"`
	// lastTransitionTime is when phase last changed.
	LastTransitionTime metav1.Time `json:"lastTransitionTime"`
	// progress of the running build; set while phase is Building.
	// +optional
	Progress *BuildProgress `json:"progress,omitempty"`
}

// BuildProgress is how far a running build is.
type BuildProgress struct {
	// layersDone is the number of layers indexed so far.
	LayersDone int32 `json:"layersDone"`
	// layers is the number of layers to index.
	Layers int32 `json:"layers"`
	// bytesDone is the number of compressed layer bytes read so far.
	BytesDone int64 `json:"bytesDone"`
	// bytes is the number of compressed layer bytes to read.
	Bytes int64 `json:"bytes"`
}
