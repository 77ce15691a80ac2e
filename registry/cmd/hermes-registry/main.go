// Command hermes-registry serves the Hermes cache registry alone: the OCI
// distribution API with the Referrers API, mirror-name rewriting and write
// auth (package registry), plus metrics and health on a second port.
// hermes-controller serves the same registry in-process; this binary is for
// running it apart, to scale it out.
package main

import (
	"context"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/cli"
	_ "github.com/hermes-oci/hermes/registry/drivers"
)

// settings are every knob: the registry's own and this binary's ops port.
type settings struct {
	cli.Logging
	registry.Settings
	OpsAddr string `arg:"--ops-addr,env:OPS_ADDR" default:":5001" placeholder:"HOST:PORT" help:"listen address of /metrics, /healthz and /readyz; empty disables"`
}

var command = cli.Command[settings]{
	Name:        "hermes-registry",
	Description: "hermes-registry serves the Hermes cache registry: the OCI distribution API with the Referrers API.",
	EnvPrefix:   "HERMES_REGISTRY_",
	Run:         run,
}

func main() { cli.Main(command) }

func run(ctx context.Context, s *settings) error {
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := registry.NewServer(ctx, s.Settings, metrics)
	if err != nil {
		return err
	}
	if _, err := srv.Listen(); err != nil {
		srv.Registry().Close()
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Start(ctx) })
	if c := srv.Registry().Collector(); c != nil {
		g.Go(func() error { return c.Start(ctx) })
	}
	if s.OpsAddr != "" {
		l, err := net.Listen("tcp", s.OpsAddr)
		if err != nil {
			return err
		}
		g.Go(func() error {
			return cli.Serve(ctx, "ops", l, registry.OpsHandler(metrics, srv.Registry().Ready), nil)
		})
	}
	return g.Wait()
}
