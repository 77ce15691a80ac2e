// Package cli is how every Hermes binary starts: hermes-registry,
// hermes-controller, hermes-snapshotter and the hermes tool.
//
//   - Settings are declared once, as a struct: each field's go-arg tags give
//     its flag, environment variable, default and help together
//     (github.com/alexflint/go-arg). A flag wins over the environment, which
//     wins over the default. Sizes ("10MiB") and durations ("30s") parse.
//   - One main shape: Main parses, sets up the logger, runs the command under
//     a context that SIGINT and SIGTERM cancel, and exits 0 on success and on
//     --help (help on stdout), 2 on a usage error (with the usage on stderr),
//     1 when the command fails.
//   - One logger: slog (JSON by default, or text), carried in the context as
//     a logr.Logger (logr.FromContextOrDiscard), which is also what
//     controller-runtime takes. RouteLibraryLogs sends what logrus-based
//     libraries log (distribution, containerd, soci) into the same handler:
//     it changes process-wide state, so only Main calls it.
//
// It lives under registry/ because the registry is the leaf of Hermes'
// import graph and builds without cgo: every binary can import it.
package cli
