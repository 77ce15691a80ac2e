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
// Every setting is a flag and an environment variable; see --help.
//
// `hermes-snapshotter holder` runs the FUSE session holder: the process
// that keeps the lazily mounted layers' FUSE connections while the
// snapshotter restarts (package fusesession). The snapshotter starts it
// when none runs; a systemd unit of its own keeps it out of the
// snapshotter's stop and restart.
package main

import (
	"context"
	"os"
	"time"

	"github.com/hermes-oci/hermes/registry/cli"
	"github.com/hermes-oci/hermes/snapshotter/daemon"
	"github.com/hermes-oci/hermes/snapshotter/fusesession"
)

const defaultConfig = "/etc/hermes-snapshotter/config.toml"

type settings struct {
	cli.Logging
	Socket         string `arg:"--socket,env:SOCKET" default:"/run/hermes-snapshotter/hermes.sock" placeholder:"PATH" help:"unix socket containerd's proxy_plugins entry points at"`
	Root           string `arg:"--root,env:ROOT" default:"/var/lib/hermes-snapshotter" placeholder:"DIR" help:"directory for snapshots, FUSE state and the local SOCI index store"`
	Config         string `arg:"--config,env:CONFIG" default:"/etc/hermes-snapshotter/config.toml" placeholder:"FILE" help:"TOML configuration: soci-snapshotter's sections plus [hermes]; a missing file at the default path means defaults"`
	MetricsAddress string `arg:"--metrics-address,env:METRICS_ADDRESS" default:"127.0.0.1:9102" placeholder:"HOST:PORT" help:"serves Prometheus /metrics and /healthz; empty disables"`
}

var command = cli.Command[settings]{
	Name:        "hermes-snapshotter",
	Description: "hermes-snapshotter is a containerd proxy snapshotter that mounts image layers lazily when the Hermes cache registry holds their SOCI index.",
	EnvPrefix:   "HERMES_SNAPSHOTTER_",
	Run: func(ctx context.Context, s *settings) error {
		return daemon.Run(ctx, daemon.Options{
			Socket:         s.Socket,
			Root:           s.Root,
			ConfigPath:     s.Config,
			ConfigRequired: s.Config != defaultConfig,
			MetricsAddress: s.MetricsAddress,
		})
	},
}

type holderSettings struct {
	cli.Logging
	Root           string        `arg:"--root,env:ROOT" default:"/var/lib/hermes-snapshotter" placeholder:"DIR" help:"the snapshotter's --root"`
	Socket         string        `arg:"--socket,env:HOLDER_SOCKET" placeholder:"PATH" help:"socket snapshotters connect to (default: <root>/fusesession/holder.sock; [hermes] holder_socket)"`
	RestartTimeout time.Duration `arg:"--restart-timeout,env:RESTART_TIMEOUT" default:"2m" help:"how long requests wait for a stopped snapshotter before they fail with EIO, until a snapshotter sets it ([hermes] restart_timeout)"`
	IdleExit       time.Duration `arg:"--idle-exit,env:IDLE_EXIT" default:"0s" help:"exit once nothing is held and no snapshotter is connected for this long; 0 never"`
}

var holderCommand = cli.Command[holderSettings]{
	Name:        "hermes-snapshotter holder",
	Description: "keeps the FUSE connections of hermes-snapshotter's lazily mounted layers across its restarts.",
	EnvPrefix:   "HERMES_SNAPSHOTTER_",
	Run: func(ctx context.Context, s *holderSettings) error {
		sock := s.Socket
		if sock == "" {
			sock = fusesession.SocketPath(s.Root)
		}
		return fusesession.RunHolder(ctx, fusesession.HolderOptions{Socket: sock, RestartTimeout: s.RestartTimeout, IdleExit: s.IdleExit})
	},
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "holder" {
		os.Exit(cli.Run(context.Background(), holderCommand, os.Args[2:], os.Stdout, os.Stderr))
	}
	cli.Main(command)
}
