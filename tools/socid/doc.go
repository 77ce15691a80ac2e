// Command socid is the benchmark's peer: upstream soci-snapshotter v0.16.1's
// daemon, soci-snapshotter-grpc, as its users run it. The Go module proxy
// serves soci's library (github.com/awslabs/soci-snapshotter) but not its
// cmd module, so this main wires that library the way upstream's
// cmd/soci-snapshotter-grpc/main.go does (read at awslabs/soci-snapshotter,
// the revision v0.16.1's library matches), with upstream's defaults. No
// Hermes package is in its import graph: `go list -deps ./socid | grep
// hermes` prints only this package.
//
// Correspondence with upstream's main.go, in order:
//
//	upstream                                  socid
//	consts defaultAddress, defaultLogLevel,   the same consts, same values
//	  envAddress/Config/LogLevel/Root
//	buildApp: cli flags address, config,      parseFlags: the same four flags, same
//	  log-level, root (cli.EnvVars)             defaults; the env var sets the default
//	--version (cli)                           -version (version.Version is the soci
//	                                            module's version from build info, as
//	                                            upstream's Makefile stamps it)
//	config dump/default subcommands           not wired (they print, nothing runs)
//	Action: logrus.ParseLevel, SetLevel,      run: the same calls, same order
//	  JSONFormatter(RFC3339NanoFixed),
//	  log.WithLogger, golog → debug level
//	config.NewConfigFromToml(--config)        same (a missing default path = defaults)
//	service.Supported unless                  same
//	  SkipCheckSnapshotterSupported
//	grpc.NewServer + namespace interceptors   same (namespaces.go: the interceptors)
//	dockerconfig keychain; kubeconfig         same
//	  keychain if enabled; CRI keychain if
//	  enabled (cri.NewCRIKeychain, image
//	  service registered on the server)
//	getMetadataStore: "db" (bbolt, same       metadataStore: same options
//	  options) or "db-multi"
//	service.NewSociSnapshotterService(root,   same, with fs.WithMetadataStore
//	  &cfg.ServiceConfig, creds, fs opts)
//	serve: snapshots service, metrics         serve: same; SIGINT cleans up
//	  listener, debug pprof, listen (unix or    (rs.Close), SIGTERM leaves mounts
//	  fd:// systemd activation), sd_notify,
//	  SIGINT/SIGTERM
//	getCriConn                                criConn: same dial options
//
// The benchmark gives it one config file with what a user of a plain-HTTP
// loopback registry writes ([resolver.host."H".mirrors] insecure = true) and
// nothing else, so every other setting is upstream's default (SOCI index
// manifest v2 pull mode, no background fetch changes, no prefetch).
package main
