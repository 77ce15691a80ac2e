// Command hermes-snapshotter is the Hermes node snapshotter: a containerd
// proxy snapshotter that mounts image layers lazily over FUSE when the
// Hermes cache registry holds the image's SOCI index.
//
// containerd config (version 3):
//
//	[proxy_plugins.hermes]
//	  type = "snapshot"
//	  address = "/run/hermes-snapshotter/hermes.sock"
//	  [proxy_plugins.hermes.exports]
//	    root = "/var/lib/hermes-snapshotter"
//	    enable_remote_snapshot_annotations = "true"
//
// Every setting is a flag and an environment variable; see -help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/hermes-oci/hermes/snapshotter/daemon"
)

const defaultConfig = "/etc/hermes-snapshotter/config.toml"

type settings struct {
	socket, root, config, metrics, logLevel, logFormat string
}

func main() {
	if err := run(os.Args[1:], os.Getenv, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "hermes-snapshotter:", err)
		}
		os.Exit(1)
	}
}

// parse declares every setting once: flag, environment variable, default
// and help together; the environment overrides the default, a flag both.
func parse(args []string, getenv func(string) string, out io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("hermes-snapshotter", flag.ContinueOnError)
	fs.SetOutput(out)
	str := func(p *string, name, def, help string) {
		env := "HERMES_SNAPSHOTTER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if v := getenv(env); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, help+" (env "+env+")")
	}
	str(&s.socket, "socket", "/run/hermes-snapshotter/hermes.sock", "unix socket containerd's proxy_plugins entry points at")
	str(&s.root, "root", "/var/lib/hermes-snapshotter", "directory for snapshots, FUSE state and the local SOCI index store")
	str(&s.config, "config", defaultConfig, "TOML configuration: soci-snapshotter's sections plus [hermes]; a missing file at the default path means defaults")
	str(&s.metrics, "metrics-address", "127.0.0.1:9102", "host:port serving Prometheus /metrics and /healthz; empty disables")
	str(&s.logLevel, "log-level", "info", "debug, info, warn or error")
	str(&s.logFormat, "log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return s, nil
}

func run(args []string, getenv func(string) string, stderr io.Writer) error {
	s, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.logLevel)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch s.logFormat {
	case "text":
		h = slog.NewTextHandler(stderr, hopts)
	case "json":
		h = slog.NewJSONHandler(stderr, hopts)
	default:
		return fmt.Errorf("log format %q: want text or json", s.logFormat)
	}
	daemon.RouteLibraryLogs(h, level)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logr.NewContext(ctx, logr.FromSlogHandler(h))
	return daemon.Run(ctx, daemon.Options{
		Socket:         s.socket,
		Root:           s.root,
		ConfigPath:     s.config,
		ConfigRequired: s.config != defaultConfig,
		MetricsAddress: s.metrics,
	})
}
