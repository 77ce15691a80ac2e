// Package cluster holds the end-to-end tests of the whole chain on a real
// single-node cluster (harness.StartCluster): kube-apiserver, etcd,
// kube-controller-manager, kube-scheduler, a kubelet with containerd's CRI
// and runc, hermes-snapshotter on the node as its systemd unit would run,
// and Pods that really run.
package cluster
