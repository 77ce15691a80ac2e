// Package controller holds the end-to-end tests of hermes-controller
// against real components: kube-apiserver and etcd (built from source),
// distribution's registry as the origin, hermes-controller from the working
// tree with its embedded cache registry, and the CLIs users inspect the
// cache with (kubectl, oras, crane). No kubelet: Pods stay Pending, which is
// all the controller needs to see them.
package controller
