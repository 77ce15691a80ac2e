// Package daemon runs hermes-snapshotter: it reads the configuration
// (soci-snapshotter's sections plus [hermes]), assembles soci's snapshotter
// from its exported parts, puts package snapshotter's resolution in front of
// it, and serves it to containerd over gRPC on a unix socket with
// containerd's contrib/snapshotservice, with Prometheus metrics and a health
// endpoint on their own port and systemd readiness notification.
//
// Registry hosts, mirrors, TLS and headers for layer reads come from
// containerd's hosts.toml directory ([hermes] hosts_dir, containerd's
// config_path), so the snapshotter reads layers where containerd would.
//
// Credentials for private image registries, in the order they are tried:
//   - [cri_keychain] enable_keychain = true (soci's section): the
//     snapshotter also serves the CRI image service on its socket and
//     forwards it to containerd's (image_service_path); point the kubelet's
//     --image-service-endpoint at the snapshotter's socket and every Pod's
//     imagePullSecrets reach the layer reads. The choice for Kubernetes.
//   - [hermes] docker_config = true (default): the node's docker
//     config.json ($DOCKER_CONFIG, else ~/.docker), for credentials every
//     Pod on the node may use.
//
// soci's kubeconfig keychain (which reads every Secret in the cluster) is
// not offered.
//
// The file tree of each lazily mounted layer is kept in memory (package
// memmeta) up to [hermes] memory_metadata_entries entries over all layers,
// then in soci's bbolt store; a 12,500-file layer mounts in ~20 ms instead
// of ~0.8 s, which for an image of many files is most of its start.
package daemon
