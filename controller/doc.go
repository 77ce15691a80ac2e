// Package controller is the control half of Hermes: it watches
// HermesPolicies, Namespaces and Pods, decides which images need a SOCI
// index, builds them in-process with the builder into the cache registry,
// and reports on each policy (status, Events, metrics).
//
// Key terms:
//
//   - Want: a Pod's image that a policy selects (active, namespace
//     matching, a selector matching the image). Every init, regular and
//     ephemeral container counts.
//   - ImageKey: an image as wanted: its normalized reference (tag and/or
//     digest), one platform, one set of build settings. Pods and policies
//     that want the same ImageKey share it.
//   - Key: one build: a repository, a platform manifest digest, the
//     platform, the settings. Tags are resolved to manifest digests before
//     anything is built, so two tags of one image are one Key, and a tag
//     that moves leads to a new Key.
//
// Flow: a Pod or policy change recomputes the Pod's wants (reconcile from
// the current state, never from the event). A new ImageKey goes to the
// resolve queue; its worker reads the Pod's pull credentials (imagePullSecrets
// and the ServiceAccount's, by get, never list), resolves the reference at
// its registry, and puts the Key on the build queue. Build workers (bounded
// concurrency, a timeout per build) run builder.Build: an index already in
// the cache is found and reported Ready without a rebuild, so the state
// after a restart comes from the registry and the API server alone; no
// database. Both queues deduplicate and never drop a key: retryable errors
// go back with exponential backoff up to a cap, terminal ones are recorded
// once and retried only when the policy or the credentials change.
//
// Status is computed from memory and written per policy at most once per
// interval, only when it changed, with conflict retries.
//
// Replicas: the workers, the status writer and garbage collection run on
// the elected leader only (controller-runtime's Lease); the new leader
// rebuilds everything from the API server and the cache.
//
// Garbage collection (collector): a usage record per image manifest in the
// cache (artifacts.Usage) says whether Pods use it and since when not; the
// leader deletes, through the OCI API, the indexes of manifests unused for
// longer than the longest retention of the policies matching them (or the
// last recorded one when none matches any more), and superseded indexes.
package controller
