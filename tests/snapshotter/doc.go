// Package snapshotter tests hermes-snapshotter against real components:
// containerd v2 with runc, FUSE, distribution's registry as the origin that
// images live in, and a cache registry holding SOCI indexes built by Hermes'
// builder. What each test starts, it stops; no mount outlives a test.
//
//	TestLazyPull          index only in the cache: lazy mounts, range reads only
//	TestTreeEquality      edge-case image: lazy mounts == overlayfs extraction
//	TestFallbacks         cache refused / hanging / corrupt zTOC: normal pull
//	TestNoIndex           no index anywhere: normal pull
//	TestUpstreamDiscovery index only next to the image: lazy via soci's way
//	TestContainerdSuite   containerd's core/snapshots/testsuite over the socket
//	TestRestart           restart while a lazily started container runs
//	TestNodeDisk          3 images run then removed: disk back; span cap evicts; no WARN
//	TestCrashLeftovers    kill -9 mid-mount: leftovers cleaned, nothing stale served
package snapshotter
