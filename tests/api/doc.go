// Package api tests the hermes.dev/v1alpha1 API as a cluster serves it: the
// generated CRD in manifests/crd is installed into a real kube-apiserver, and
// its defaults, validation rules, printer columns and status subresource are
// exercised with kubectl and client-go, the clients users and the
// controller use.
package api
