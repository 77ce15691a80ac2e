package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/awslabs/soci-snapshotter/service/keychain/cri/v1"
	"github.com/awslabs/soci-snapshotter/service/keychain/dockerconfig"
	"github.com/awslabs/soci-snapshotter/service/resolver"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/coreos/go-systemd/v22/activation"
	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/go-logr/logr"
	"github.com/hermes-oci/hermes/registry/cli"
	"github.com/hermes-oci/hermes/snapshotter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Options are the settings that come from flags and the environment.
type Options struct {
	// Socket is the unix socket containerd's proxy_plugins entry names.
	Socket string
	// Root holds snapshots, soci's state and the local index store.
	Root string
	// ConfigPath is the TOML file; ConfigRequired makes a missing file an
	// error (an explicitly given path).
	ConfigPath     string
	ConfigRequired bool
	// MetricsAddress serves /metrics and /healthz; empty disables.
	MetricsAddress string
}

// Run starts the snapshotter and serves until ctx ends, then stops serving,
// unmounts every lazily mounted layer and returns. The logger comes from
// ctx (logr). Under systemd (NOTIFY_SOCKET set) it reports READY=1 once the
// socket accepts connections, and STOPPING=1 when it begins to stop.
func Run(ctx context.Context, o Options) error {
	log := logr.FromContextOrDiscard(ctx)
	cfg, err := LoadConfig(o.ConfigPath, o.ConfigRequired)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.Root, 0o700); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	metrics := snapshotter.NewMetrics(reg)

	// Credentials for image registries (layer reads, upstream discovery).
	var creds []resolver.Credential
	var criServer runtime.ImageServiceServer
	if cfg.Soci.CRIKeychainConfig.EnableKeychain {
		var cred resolver.Credential
		cred, criServer = cri.NewCRIKeychain(ctx, connectCRI(cfg.Soci.CRIKeychainConfig.ImageServicePath))
		creds = append(creds, cred)
	}
	if cfg.Hermes.DockerConfig {
		creds = append(creds, dockerconfig.NewDockerConfigKeychain(ctx))
	}
	hosts := registryHosts(ctx, cfg.Hermes.HostsDir, creds, cfg.Soci.FSConfig.RetryableHTTPClientConfig,
		time.Duration(cfg.Soci.ResolverConfig.AuthClientTTLSec)*time.Second, metrics.CountBlobBytes)

	soci, st, err := newSoci(ctx, o.Root, cfg.Soci, cfg.Hermes.MemoryMetadataEntries, hosts, newSessions(o.Root, cfg.Hermes, reg))
	if err != nil {
		return err
	}
	snapshotter.WatchMetadata(reg, soci.meta)
	closeSoci := func() {
		if err := soci.Close(); err != nil {
			log.Error(err, "closing soci")
		}
	}

	var sources []snapshotter.Source
	if cfg.Hermes.CacheURL != "" {
		tlsCfg, err := cacheTLS(cfg.Hermes)
		if err != nil {
			closeSoci()
			return err
		}
		c, err := snapshotter.NewCacheRegistry(snapshotter.CacheRegistryOptions{
			URL: cfg.Hermes.CacheURL, Username: cfg.Hermes.CacheUsername, Password: cfg.Hermes.CachePassword, TLS: tlsCfg,
			Timeout: cfg.Hermes.Timeout.D(), FetchTimeout: cfg.Hermes.FetchTimeout.D(), Store: st,
		})
		if err != nil {
			closeSoci()
			return err
		}
		sources = append(sources, c)
	}
	if cfg.Hermes.UpstreamDiscovery {
		u, err := snapshotter.NewUpstream(snapshotter.UpstreamOptions{
			Hosts: hosts, V1: cfg.Soci.PullModes.SOCIv1.Enable, V2: cfg.Soci.PullModes.SOCIv2.Enable,
			Timeout: cfg.Hermes.UpstreamTimeout.D(), Store: st,
		})
		if err != nil {
			closeSoci()
			return err
		}
		sources = append(sources, u)
	}
	res := snapshotter.NewResolver(snapshotter.ResolverOptions{NegativeTTL: cfg.Hermes.NegativeTTL.D(), Observer: metrics}, sources...)
	sn := snapshotter.New(soci, res, metrics)
	janitor := newJanitor(o.Root, cfg, soci, sn, res, reg)

	l, err := listenUnix(o.Socket)
	if err != nil {
		closeSoci()
		return err
	}
	rpc := grpc.NewServer(grpc.ChainUnaryInterceptor(contextInterceptor(ctx)))
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	if criServer != nil {
		runtime.RegisterImageServiceServer(rpc, criServer)
	}

	var serving atomic.Bool
	var metricsListener net.Listener
	if o.MetricsAddress != "" {
		if metricsListener, err = net.Listen("tcp", o.MetricsAddress); err != nil {
			l.Close()
			closeSoci()
			return fmt.Errorf("metrics listener: %w", err)
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return janitor.Run(gctx) })
	g.Go(func() error {
		if err := rpc.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve %s: %w", o.Socket, err)
		}
		return nil
	})
	if metricsListener != nil {
		mux := http.NewServeMux()
		// soci registers its soci_fs_* metrics in the default registry.
		mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, prometheus.DefaultGatherer}, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if !serving.Load() {
				http.Error(w, "not serving", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		g.Go(func() error { return cli.Serve(gctx, "metrics", metricsListener, mux, nil) })
	}
	serving.Store(true)
	log.Info("hermes-snapshotter serving", "socket", o.Socket, "root", o.Root, "cache", cfg.Hermes.CacheURL,
		"upstreamDiscovery", cfg.Hermes.UpstreamDiscovery, "hostsDir", cfg.Hermes.HostsDir, "contentStore", cfg.Soci.ContentStoreConfig.Type)
	if ok, err := sdnotify.SdNotify(false, sdnotify.SdNotifyReady); err != nil {
		log.Error(err, "sd_notify READY")
	} else if ok {
		log.V(1).Info("told systemd READY=1")
	}

	g.Go(func() error {
		<-gctx.Done()
		serving.Store(false)
		_, _ = sdnotify.SdNotify(false, sdnotify.SdNotifyStopping)
		if cfg.Hermes.SurviveRestarts {
			log.Info("stopping: lazily mounted layers stay, for the next snapshotter to serve")
		} else {
			log.Info("stopping: unmounting lazily mounted layers")
		}
		stopGRPC(rpc, 10*time.Second)
		sn.Exclusive(closeSoci) // after a janitor pass under way

		return nil
	})
	return g.Wait()
}

// stopGRPC lets in-flight calls finish for up to grace, then cuts them.
func stopGRPC(s *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.Stop()
	}
}

// contextInterceptor gives every call the process's logger, and puts the
// caller's containerd namespace on outgoing requests as well, which soci's
// containerd content store needs when it calls back into containerd.
func contextInterceptor(base context.Context) grpc.UnaryServerInterceptor {
	log := logr.FromContextOrDiscard(base)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx = logr.NewContext(ctx, log)
		if ns, ok := namespaces.Namespace(ctx); ok {
			ctx = namespaces.WithNamespace(ctx, ns)
		}
		return handler(ctx, req)
	}
}

// listenUnix listens on path, replacing a socket left by a previous run but
// refusing to take over one that still answers. A socket systemd passes in
// (hermes-snapshotter.socket, socket activation) is used instead.
func listenUnix(path string) (net.Listener, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket passed by systemd: %w", err)
	}
	for _, l := range ls {
		if l != nil && l.Addr().Network() == "unix" {
			return l, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another process is serving on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func connectCRI(path string) func() (runtime.ImageServiceClient, error) {
	return func() (runtime.ImageServiceClient, error) {
		conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		return runtime.NewImageServiceClient(conn), nil
	}
}

func cacheTLS(h Hermes) (*tls.Config, error) {
	if h.CacheCAFile == "" && !h.CacheInsecureSkipVerify {
		return nil, nil
	}
	c := &tls.Config{InsecureSkipVerify: h.CacheInsecureSkipVerify}
	if h.CacheCAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(h.CacheCAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: cache_ca_file: %w", ErrConfig, err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: cache_ca_file %s holds no PEM certificate", ErrConfig, h.CacheCAFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}
