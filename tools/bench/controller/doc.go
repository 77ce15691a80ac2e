// Package controller benchmarks hermes-controller at cluster scale: 10,000
// Pods referencing 500 distinct small images are created against a real
// kube-apiserver (with etcd), one HermesPolicy selects them all, and the
// benchmark measures the time from the first Pod create until the policy's
// status says every image is Ready, the controller's peak RSS (VmHWM), the
// API requests it made (client-go's rest_client_requests_total) and the
// status writes (hermes_controller_status_writes_total). The controller runs
// with its defaults, from the working tree, with the embedded registry; the
// origin is distribution's registry on loopback.
//
//	cd tools && go test -run '^$' -bench Controller -benchtime 1x -timeout 30m ./bench/controller
//
// Goals: < 60 s, < 300 MiB, status writes ≤ 2 per image.
// Settings (environment): HERMES_BENCH_PODS (default 10000),
// HERMES_BENCH_IMAGES (default 500).
// Results: $HERMES_BENCH_OUT/controller.json and controller.txt (default
// <repo>/.bench).
package controller
