// Package harness starts the real components Hermes is tested against, on
// 127.0.0.1 with free ports and temporary roots, and stops them by PID when the
// test ends: distribution's registry (the "origin"), hermes-registry,
// containerd v2 with runc, and kube-apiserver with etcd.
//
// Binaries come from $HERMES_CACHE/bin (default ~/.cache/hermes/bin), where
// `make deps` installs them, then from $PATH. A component that is missing
// fails the test when CI=true and skips it otherwise. A component's log is
// written to the test's output only when the test fails.
package harness
