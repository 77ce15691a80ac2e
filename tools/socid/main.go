package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	golog "log"
	"net"
	"net/http"
	_ "net/http/pprof" // upstream serves pprof on debug_address
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/awslabs/soci-snapshotter/config"
	"github.com/awslabs/soci-snapshotter/fs"
	"github.com/awslabs/soci-snapshotter/metadata"
	"github.com/awslabs/soci-snapshotter/service"
	cri "github.com/awslabs/soci-snapshotter/service/keychain/cri/v1"
	"github.com/awslabs/soci-snapshotter/service/keychain/dockerconfig"
	"github.com/awslabs/soci-snapshotter/service/keychain/kubeconfig"
	"github.com/awslabs/soci-snapshotter/service/resolver"
	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/version"
	"github.com/awslabs/soci-snapshotter/ztoc"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/dialer"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	metrics "github.com/docker/go-metrics"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Upstream's defaults and environment variables.
const (
	defaultAddress  = "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock"
	defaultLogLevel = logrus.InfoLevel

	envAddress  = "SOCI_SNAPSHOTTER_ADDRESS"
	envConfig   = "SOCI_SNAPSHOTTER_CONFIG"
	envLogLevel = "SOCI_SNAPSHOTTER_LOG_LEVEL"
	envRoot     = "SOCI_SNAPSHOTTER_ROOT"
)

// flags are upstream's four global flags; an environment variable sets the
// default as upstream's cli.EnvVars does.
type flags struct{ address, config, logLevel, root string }

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("soci-snapshotter-grpc", flag.ContinueOnError)
	fs.StringVar(&f.address, "address", envOr(envAddress, defaultAddress), "address for the snapshotter's GRPC server")
	fs.StringVar(&f.config, "config", envOr(envConfig, config.DefaultConfigPath), "path to the configuration file")
	fs.StringVar(&f.logLevel, "log-level", envOr(envLogLevel, defaultLogLevel.String()), "set the logging level [trace, debug, info, warn, error, fatal, panic]")
	fs.StringVar(&f.root, "root", envOr(envRoot, config.DefaultSociSnapshotterRootPath), "path to the root directory for this snapshotter")
	version := fs.Bool("version", false, "print the version")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if *version {
		return f, errVersion
	}
	return f, nil
}

var errVersion = errors.New("version")

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func main() {
	// Upstream's Makefile stamps the version with -ldflags; here it is the
	// soci module's version this binary was built with.
	if bi, ok := debug.ReadBuildInfo(); ok && version.Version == "<unknown>" {
		for _, m := range bi.Deps {
			if m.Path == "github.com/awslabs/soci-snapshotter" {
				version.Version = m.Version
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	err := run(ctx, os.Args[1:])
	cancel()
	if errors.Is(err, errVersion) {
		fmt.Printf("soci-snapshotter-grpc version %s %s\n", version.Version, version.Revision)
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "soci-snapshotter-grpc: %v\n", err)
		os.Exit(1)
	}
}

// run is upstream's cli Action.
func run(ctx context.Context, args []string) error {
	f, err := parseFlags(args)
	if err != nil {
		return err
	}
	lvl, err := logrus.ParseLevel(f.logLevel)
	if err != nil {
		return fmt.Errorf("failed to prepare logger: %w", err)
	}
	logrus.SetLevel(lvl)
	logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: log.RFC3339NanoFixed})

	ctx, cancel := context.WithCancel(log.WithLogger(ctx, log.L))
	defer cancel()
	// go-fuse logs through the standard library's log: upstream sends it to
	// the debug level.
	golog.SetOutput(log.G(ctx).WriterLevel(logrus.DebugLevel))
	log.G(ctx).WithFields(logrus.Fields{"version": version.Version, "revision": version.Revision}).Info("starting soci-snapshotter-grpc")

	cfg, err := config.NewConfigFromToml(f.config)
	if err != nil {
		log.G(ctx).WithError(err).Fatal(err)
		return err
	}
	rootDir := f.root
	if !cfg.SkipCheckSnapshotterSupported {
		if err := service.Supported(rootDir); err != nil {
			log.G(ctx).WithError(err).Fatalf("snapshotter is not supported")
			return err
		}
		log.G(ctx).Debug("snapshotter is supported")
	} else {
		log.G(ctx).Warn("skipped snapshotter is supported check")
	}

	rpc := grpc.NewServer(
		grpc.ChainUnaryInterceptor(unaryNamespaceInterceptor),
		grpc.ChainStreamInterceptor(streamNamespaceInterceptor),
	)

	credsFuncs := []resolver.Credential{dockerconfig.NewDockerConfigKeychain(ctx)}
	if cfg.KubeconfigKeychainConfig.EnableKeychain {
		var opts []kubeconfig.Option
		if kcp := cfg.KubeconfigKeychainConfig.KubeconfigPath; kcp != "" {
			opts = append(opts, kubeconfig.WithKubeconfigPath(kcp))
		}
		credsFuncs = append(credsFuncs, kubeconfig.NewKubeconfigKeychain(ctx, opts...))
	}
	if cfg.CRIKeychainConfig.EnableKeychain {
		connect := func() (runtime.ImageServiceClient, error) {
			conn, err := criConn(cfg.CRIKeychainConfig.ImageServicePath)
			if err != nil {
				return nil, err
			}
			return runtime.NewImageServiceClient(conn), nil
		}
		f, criServer := cri.NewCRIKeychain(ctx, connect)
		runtime.RegisterImageServiceServer(rpc, criServer)
		credsFuncs = append(credsFuncs, f)
	}

	mt, err := metadataStore(ctx, rootDir, *cfg)
	if err != nil {
		log.G(ctx).WithError(err).Fatalf("failed to configure metadata store")
		return err
	}
	log.G(ctx).Debug("metadata store initialized")
	rs, err := service.NewSociSnapshotterService(ctx, rootDir, &cfg.ServiceConfig,
		service.WithCredsFuncs(credsFuncs...), service.WithFilesystemOptions(fs.WithMetadataStore(mt)))
	if err != nil {
		log.G(ctx).WithError(err).Fatalf("failed to configure snapshotter")
		return err
	}

	cleanup, err := serve(ctx, rpc, f.address, rs, *cfg)
	if err != nil {
		log.G(ctx).WithError(err).Fatalf("failed to serve snapshotter")
		return err
	}
	if cleanup {
		log.G(ctx).Debug("Closing the snapshotter")
		rs.Close()
	}
	log.G(ctx).Info("Exiting")
	return nil
}

// serve is upstream's serve: the snapshots service, the metrics and debug
// endpoints, the socket, systemd notification, and SIGINT (clean up) or
// SIGTERM (leave mounts) to stop.
func serve(ctx context.Context, rpc *grpc.Server, addr string, rs snapshots.Snapshotter, cfg config.Config) (bool, error) {
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(rs))
	errCh := make(chan error, 1)
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()

	if cfg.MetricsAddress != "" && !cfg.NoPrometheus {
		var l net.Listener
		var err error
		if cfg.MetricsNetwork == "unix" {
			l, err = listenUnix(cfg.MetricsAddress)
		} else {
			l, err = net.Listen(cfg.MetricsNetwork, cfg.MetricsAddress)
		}
		if err != nil {
			return false, fmt.Errorf("failed to get listener for metrics endpoint: %w", err)
		}
		closers = append(closers, l.Close)
		m := http.NewServeMux()
		m.Handle("/metrics", metrics.Handler())
		go func() {
			if err := http.Serve(l, m); err != nil {
				errCh <- fmt.Errorf("error on serving metrics via socket %q: %w", addr, err)
			}
		}()
	}
	if cfg.DebugAddress != "" {
		log.G(ctx).Infof("listen %q for debugging", cfg.DebugAddress)
		go func() {
			if err := http.ListenAndServe(cfg.DebugAddress, nil); err != nil {
				errCh <- fmt.Errorf("error on serving a debug endpoint via socket %q: %w", addr, err)
			}
		}()
	}

	l, err := listen(ctx, addr)
	if err != nil {
		return false, fmt.Errorf("error on listen socket %q: %w", addr, err)
	}
	closers = append(closers, l.Close)
	go func() {
		if err := rpc.Serve(l); err != nil {
			errCh <- fmt.Errorf("error on serving via socket %q: %w", addr, err)
		}
	}()
	if os.Getenv("NOTIFY_SOCKET") != "" {
		notified, err := sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
		log.G(ctx).Debugf("SdNotifyReady notified=%v, err=%v", notified, err)
		defer func() {
			notified, err := sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
			log.G(ctx).Debugf("SdNotifyStopping notified=%v, err=%v", notified, err)
		}()
	}
	log.G(ctx).WithField("address", addr).Info("soci-snapshotter-grpc successfully started")

	sigCh := make(chan os.Signal, 1)
	signal.Notify(sigCh, unix.SIGINT, unix.SIGTERM)
	select {
	case s := <-sigCh:
		log.G(ctx).Infof("Got %v", s)
		return s == unix.SIGINT, nil
	case err := <-errCh:
		return false, err
	}
}

// metadataStore is upstream's getMetadataStore: one bbolt database ("db",
// the default) or one per layer ("db-multi").
func metadataStore(ctx context.Context, rootDir string, cfg config.Config) (metadata.Store, error) {
	switch cfg.MetadataStore {
	case "", "db":
		log.G(ctx).WithFields(logrus.Fields{"root": rootDir, "store_type": cfg.MetadataStore}).Debug("initializing metadata store")
		db, err := bolt.Open(filepath.Join(rootDir, "metadata.db"), 0o600, &bolt.Options{
			NoFreelistSync:  true,
			InitialMmapSize: 64 * 1024 * 1024,
			FreelistType:    bolt.FreelistMapType,
			NoSync:          cfg.MetadataDBNoSync,
		})
		if err != nil {
			return nil, err
		}
		return func(sr *io.SectionReader, toc ztoc.TOC, opts ...metadata.Option) (metadata.Reader, error) {
			if cfg.MetadataInsertionChunkSize > 0 {
				opts = append(opts, metadata.WithInsertionChunkSize(cfg.MetadataInsertionChunkSize))
			}
			return metadata.NewReader(db, sr, toc, opts...)
		}, nil
	case "db-multi":
		log.G(ctx).WithFields(logrus.Fields{"root": rootDir, "store_type": cfg.MetadataStore}).Debug("initializing per-layer (db-multi) metadata store")
		return metadata.NewMultiReader(filepath.Join(rootDir, "metadata"), metadata.DBMultiOptions{BoltOptions: &bolt.Options{
			NoFreelistSync:  true,
			InitialMmapSize: 64 * 1024 * 1024,
			FreelistType:    bolt.FreelistMapType,
		}}), nil
	default:
		return nil, fmt.Errorf("unknown metadata store type: %v; must be db or db-multi", cfg.MetadataStore)
	}
}

// criConn is upstream's getCriConn: a client of the CRI image service the
// CRI keychain forwards to.
func criConn(addr string) (*grpc.ClientConn, error) {
	bc := backoff.DefaultConfig
	bc.MaxDelay = 3 * time.Second
	return grpc.NewClient(dialer.DialAddress(addr),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc}),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaults.DefaultMaxRecvMsgSize)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(defaults.DefaultMaxSendMsgSize)),
	)
}

func listen(ctx context.Context, address string) (net.Listener, error) {
	proto, addr, found := strings.Cut(address, "://")
	if !found {
		proto, addr = "unix", address
	}
	switch proto {
	case "unix":
		return listenUnix(addr)
	case "fd":
		return listenFd(ctx)
	default:
		return nil, fmt.Errorf("unknown protocol for address %s", address)
	}
}

func listenUnix(addr string) (net.Listener, error) {
	if err := soci.EnsureSnapshotterRootPath(filepath.Dir(addr)); err != nil {
		return nil, fmt.Errorf("failed to create directory %q: %w", filepath.Dir(addr), err)
	}
	if err := os.RemoveAll(addr); err != nil {
		return nil, fmt.Errorf("failed to remove %q: %w", addr, err)
	}
	return net.Listen("unix", addr)
}

// listenFd takes the one socket systemd passed (socket activation), or the
// default address when there is none.
func listenFd(ctx context.Context) (net.Listener, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, err
	}
	switch {
	case len(ls) == 0:
		log.G(ctx).Info("Address was set to listen on a file descriptor, but no file descriptors were passed. Listening on the default socket address")
		return listenUnix(defaultAddress)
	case len(ls) > 1:
		for _, l := range ls {
			l.Close()
		}
		return nil, errors.New("soci only supports a single systemd socket on activation")
	}
	return ls[0], nil
}

// The interceptors copy the namespace of incoming calls to the outgoing
// context, as upstream's namespaces.go (from containerd) does.
func unaryNamespaceInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if ns, ok := namespaces.Namespace(ctx); ok {
		ctx = namespaces.WithNamespace(ctx, ns)
	}
	return h(ctx, req)
}

func streamNamespaceInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if ns, ok := namespaces.Namespace(ss.Context()); ok {
		ss = &streamWithContext{ServerStream: ss, ctx: namespaces.WithNamespace(ss.Context(), ns)}
	}
	return h(srv, ss)
}

type streamWithContext struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *streamWithContext) Context() context.Context { return s.ctx }
