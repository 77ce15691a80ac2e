// Package manifests tests manifests/: every kustomization renders, passes
// the real kube-apiserver's validation (kubectl apply --dry-run=server),
// names only flags and variables the binaries have, and its RBAC grants
// the controller what it needs and nothing it should not have.
package manifests
