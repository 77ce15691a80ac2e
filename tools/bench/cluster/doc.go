// Package cluster is the benchmark against the peer on a real single-node
// cluster (tests/harness StartCluster: kube-apiserver, etcd,
// kube-controller-manager, kube-scheduler, kubelet, containerd CRI + runc),
// on synthetic and real images, in one run:
//
//   - overlayfs: containerd's defaults (a RuntimeClass "overlayfs");
//   - upstream soci: soci-snapshotter v0.16.1 as its users run it, a second
//     proxy snapshotter with its own runtime handler ("soci"): its daemon is
//     tools/socid, which wires only soci's library as upstream's
//     cmd/soci-snapshotter-grpc does, with upstream's defaults and no Hermes
//     package in its import graph; its index is made by soci's own code
//     (soci's IndexBuilder.Convert, tools/bench/build/socibuild -convert)
//     and pushed next to the image at the origin as `soci convert` + push
//     leave it (an OCI index: the annotated image manifest and its SOCI
//     index manifest v2). Its config only says the origin speaks plain HTTP;
//   - hermes: hermes-snapshotter with the index hermes-controller built from
//     a HermesPolicy;
//   - limit: the physical limit, a warm local start (the overlayfs Pod again,
//     image on the node) plus the compressed bytes of the deflate blocks
//     holding the workload's files ÷ the link's bandwidth. The blocks come
//     from the builder's engine (controller/builder/gzindex) run with
//     64 KiB spans, so a span is a deflate block; the files are the
//     synthetic workload's list, or for the real images the files their
//     workload opens when started warm (realimages.Trace, fanotify).
//
// Pod Ready and the first HTTP 200 are measured from the Pod's creation;
// origin bytes are the blob bytes the origin's access log shows. Index
// build time is per image: for Hermes from the trigger Pod to the policy
// status Ready, for soci the IndexBuilder's convert. Pushing and indexing
// happen before the origins are shaped (tc htb on their ports); each
// repetition gets a fresh cluster, snapshotters and socid (cold caches).
//
// Images: R and C (imagegen presets, ~1 GB), R4 (4 GB of random layers)
// and node over 100 Mbit; ml (tools/realimages) over 1 Gbit.
//
//	cd tools && go test -run '^$' -bench Cluster -benchtime 1x -timeout 300m ./bench/cluster
//
// Settings (environment): HERMES_BENCH_REPS (default 3),
// HERMES_BENCH_CLUSTER_IMAGES (default "R,C,R4,node,ml"). Results:
// $HERMES_BENCH_OUT/cluster.json, cluster.txt and cluster.png (a chart).
// The real images are built on first use into ~/.cache/hermes/realimages
// (root, debootstrap, the Debian mirror and the npm registry); never in CI.
package cluster
