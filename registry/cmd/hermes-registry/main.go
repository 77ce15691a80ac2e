// Command hermes-registry serves the Hermes cache registry alone: the OCI
// distribution API with the Referrers API, mirror-name rewriting and write
// auth (package registry), plus metrics and health on a second port.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/hermes-oci/hermes/registry"
	_ "github.com/hermes-oci/hermes/registry/drivers"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "hermes-registry:", err)
		os.Exit(1)
	}
}

// settings are every knob, each declared once in bind with its flag, env
// variable, default and help.
type settings struct {
	addr, opsAddr, tlsCert, tlsKey  string
	root, storageConfig, httpSecret string
	htpasswd, tokenFile, realm      string
	logLevel                        string
	authReads, noDelete             bool
	referrersTTL                    time.Duration
	referrersSize                   int
}

func bind(fs *flag.FlagSet, getenv func(string) string) (*settings, func() error) {
	s := &settings{}
	var errs []error
	str := func(p *string, name, def, help string) {
		env := "HERMES_REGISTRY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if v := getenv(env); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, help+" (env "+env+")")
	}
	parsed := func(name, def, help string, set func(string) error) {
		env := "HERMES_REGISTRY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if v := getenv(env); v != "" {
			def = v
		}
		if err := set(def); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", env, def, err))
		}
		fs.Func(name, help+" (env "+env+", default "+def+")", set)
	}
	boolean := func(p *bool, name string, def bool, help string) {
		parsed(name, strconv.FormatBool(def), help, func(v string) (err error) { *p, err = strconv.ParseBool(v); return err })
		// Let "-flag" alone mean true, as for flag.Bool.
		fs.Lookup(name).Value = boolValue{p}
	}
	str(&s.addr, "addr", ":5000", "listen address of the registry API")
	str(&s.opsAddr, "ops-addr", ":5001", "listen address of /metrics, /healthz and /readyz; empty disables")
	str(&s.tlsCert, "tls-cert", "", "TLS certificate file; with -tls-key, serve HTTPS")
	str(&s.tlsKey, "tls-key", "", "TLS private key file")
	str(&s.root, "root", "/var/lib/hermes-registry", "filesystem storage directory, used when -storage-config is not set")
	str(&s.storageConfig, "storage-config", "", "distribution configuration file (version 0.1) whose storage section is used, e.g. s3; REGISTRY_STORAGE_* env variables override it as in distribution")
	str(&s.httpSecret, "http-secret", "", "secret signing upload state; replicas must share it (default: random per process)")
	str(&s.htpasswd, "htpasswd", "", "htpasswd file (bcrypt) of users allowed to write")
	str(&s.tokenFile, "token-file", "", "file holding a bearer token allowed to write (also accepted as a Basic auth password)")
	str(&s.realm, "realm", "hermes-registry", "realm in the Basic auth challenge")
	str(&s.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	boolean(&s.authReads, "auth-reads", false, "require a credential for reads too")
	boolean(&s.noDelete, "disable-delete", false, "refuse DELETE requests")
	parsed("referrers-cache-ttl", "0s", "how long a referrer set from storage is served from memory; set it when replicas share storage (0: until changed here)",
		func(v string) (err error) { s.referrersTTL, err = time.ParseDuration(v); return err })
	parsed("referrers-cache-size", "65536", "most subjects whose referrers are kept in memory",
		func(v string) (err error) { s.referrersSize, err = strconv.Atoi(v); return err })
	return s, func() error { return errors.Join(errs...) }
}

type boolValue struct{ p *bool }

func (b boolValue) String() string {
	if b.p == nil {
		return "false"
	}
	return strconv.FormatBool(*b.p)
}
func (b boolValue) Set(v string) (err error) { *b.p, err = strconv.ParseBool(v); return err }
func (b boolValue) IsBoolFlag() bool         { return true }

func run(ctx context.Context, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("hermes-registry", flag.ContinueOnError)
	s, envErr := bind(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := envErr(); err != nil {
		return err
	}
	if (s.tlsCert == "") != (s.tlsKey == "") {
		return errors.New("-tls-cert and -tls-key go together")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.logLevel)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	registry.RouteDistributionLogs(logger)
	ctx = logr.NewContext(ctx, logr.FromSlogHandler(logger.Handler()))

	storage := registry.FilesystemStorage(s.root)
	if s.storageConfig != "" {
		f, err := os.Open(s.storageConfig)
		if err != nil {
			return fmt.Errorf("storage config: %w", err)
		}
		dc, err := configuration.Parse(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("storage config %s: %w", s.storageConfig, err)
		}
		storage = dc.Storage
	}
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg, err := registry.New(ctx, registry.Config{
		Storage:       storage,
		DisableDelete: s.noDelete,
		HTTPSecret:    s.httpSecret,
		Auth: registry.AuthConfig{
			HtpasswdFile: s.htpasswd, TokenFile: s.tokenFile, RequireRead: s.authReads, Realm: s.realm,
		},
		ReferrersCacheTTL:  s.referrersTTL,
		ReferrersCacheSize: s.referrersSize,
		Metrics:            metrics,
	})
	if err != nil {
		return err
	}
	defer reg.Close()

	g, ctx := errgroup.WithContext(ctx)
	serve := func(name, addr string, h http.Handler, tls bool) {
		srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 30 * time.Second,
			BaseContext: func(net.Listener) context.Context { return ctx }}
		g.Go(func() error {
			logger.Info("serving", "server", name, "addr", addr, "tls", tls)
			var err error
			if tls {
				err = srv.ListenAndServeTLS(s.tlsCert, s.tlsKey)
			} else {
				err = srv.ListenAndServe()
			}
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("%s server: %w", name, err)
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	serve("registry", s.addr, reg, s.tlsCert != "")
	if s.opsAddr != "" {
		serve("ops", s.opsAddr, registry.OpsHandler(metrics, reg.Ready), false)
	}
	err = g.Wait()
	logger.Info("stopped", "err", err)
	return err
}
