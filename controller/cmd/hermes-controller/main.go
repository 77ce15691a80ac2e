// Command hermes-controller is the Hermes controller: it watches
// HermesPolicies and Pods, builds SOCI indexes for the images they select,
// and serves the cache registry those indexes live in, in-process, on one
// port (or pushes to a cache registry elsewhere, --cache-registry).
// Metrics and health probes are on their own ports. main only wires; the
// behaviour is in package controller, controller/builder and registry.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller"
	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/registry/cli"
	_ "github.com/hermes-oci/hermes/registry/drivers"
)

// settings are every knob: the embedded registry's (registry.Settings) and
// the controller's.
type settings struct {
	cli.Logging
	registry.Settings

	CacheRegistry     string `arg:"--cache-registry,env:CACHE_REGISTRY" placeholder:"HOST:PORT" help:"push to this cache registry instead of serving one in-process (the registry flags then do not apply)"`
	CacheUsername     string `arg:"--cache-username,env:CACHE_USERNAME" help:"user for writes to the cache registry"`
	CachePasswordFile string `arg:"--cache-password-file,env:CACHE_PASSWORD_FILE" placeholder:"FILE" help:"password (or token) for writes to the cache registry; in-process, a token of its own is made when --token-file is not set"`

	Kubeconfig     string        `arg:"--kubeconfig,env:KUBECONFIG" placeholder:"FILE" help:"kubeconfig; default: in-cluster config"`
	MetricsAddr    string        `arg:"--metrics-addr,env:METRICS_ADDR" default:":8080" placeholder:"HOST:PORT" help:"Prometheus /metrics; 0 disables"`
	HealthAddr     string        `arg:"--health-addr,env:HEALTH_ADDR" default:":8081" placeholder:"HOST:PORT" help:"/healthz and /readyz; 0 disables"`
	LeaderElect    bool          `arg:"--leader-elect,env:LEADER_ELECT" default:"true" help:"elect a leader with a Lease: only the leader resolves, builds, writes status and collects artifacts; every replica serves the cache registry. --leader-elect=false for a single replica outside a cluster"`
	LeaseID        string        `arg:"--leader-election-id,env:LEADER_ELECTION_ID" default:"hermes-controller" placeholder:"NAME" help:"name of the Lease the replicas share"`
	LeaseNamespace string        `arg:"--leader-election-namespace,env:LEADER_ELECTION_NAMESPACE" placeholder:"NAMESPACE" help:"namespace of the Lease (default: the Pod's own; required outside a cluster)"`
	LeaseDuration  time.Duration `arg:"--lease-duration,env:LEASE_DURATION" default:"15s" placeholder:"DURATION" help:"how long a Lease holds without renewal: the longest the replicas wait for a leader that died"`
	RenewDeadline  time.Duration `arg:"--renew-deadline,env:RENEW_DEADLINE" default:"10s" placeholder:"DURATION" help:"how long the leader keeps trying to renew its Lease before it stops leading (and exits)"`
	RetryPeriod    time.Duration `arg:"--retry-period,env:RETRY_PERIOD" default:"2s" placeholder:"DURATION" help:"how often replicas try to take or renew the Lease"`

	ArtifactGCInterval time.Duration `arg:"--artifact-gc-interval,env:ARTIFACT_GC_INTERVAL" default:"10m" placeholder:"DURATION" help:"how often the leader deletes indexes past their policies' retention and superseded ones (--blob-gc-interval is the registry's blob collection, which frees their bytes); 0 disables"`

	Platforms        string        `arg:"--platforms,env:PLATFORMS" help:"platforms of policies that name none, comma-separated (default: the controller's own)"`
	BuildConcurrency int           `arg:"--build-concurrency,env:BUILD_CONCURRENCY" default:"2" placeholder:"N" help:"images built at once"`
	LayerConcurrency int           `arg:"--layer-concurrency,env:LAYER_CONCURRENCY" default:"2" placeholder:"N" help:"layers of one image built at once"`
	BuildTimeout     time.Duration `arg:"--build-timeout,env:BUILD_TIMEOUT" default:"1h" placeholder:"DURATION" help:"longest one build may take before it is cut short and retried"`
	ResolveWorkers   int           `arg:"--resolve-workers,env:RESOLVE_WORKERS" default:"8" placeholder:"N" help:"image references resolved at once"`
	ResolveTTL       time.Duration `arg:"--resolve-ttl,env:RESOLVE_TTL" default:"1m" placeholder:"DURATION" help:"how long a tag's digest is trusted before a Pod change resolves it again"`
	Resync           time.Duration `arg:"--resync,env:RESYNC" default:"10m" placeholder:"DURATION" help:"every wanted image is resolved again this often, to notice tags that moved"`
	RecheckFailed    time.Duration `arg:"--recheck-failed,env:RECHECK_FAILED" default:"1m" placeholder:"DURATION" help:"how often images that failed for good have their pull secrets read again (Secrets are not watched); a change retries them"`
	RetryBase        time.Duration `arg:"--retry-base,env:RETRY_BASE" default:"1s" placeholder:"DURATION" help:"first wait before a failed build or resolution is retried; doubles each time"`
	RetryMax         time.Duration `arg:"--retry-max,env:RETRY_MAX" default:"5m" placeholder:"DURATION" help:"longest wait between retries"`
	StatusInterval   time.Duration `arg:"--status-interval,env:STATUS_INTERVAL" default:"2s" placeholder:"DURATION" help:"least time between two status writes of one policy"`
	TempDir          string        `arg:"--temp-dir,env:TEMP_DIR" placeholder:"DIR" help:"where builds stage files (default $TMPDIR)"`
	PlainHTTP        string        `arg:"--plain-http,env:PLAIN_HTTP" placeholder:"HOSTS" help:"comma-separated image registry hosts spoken to over plain HTTP (loopback hosts always are)"`
}

var command = cli.Command[settings]{
	Name:        "hermes-controller",
	Description: "hermes-controller builds SOCI indexes for the images HermesPolicies select and serves the cache registry they live in.",
	EnvPrefix:   "HERMES_CONTROLLER_",
	Run:         run,
}

func main() { cli.Main(command) }

func run(ctx context.Context, s *settings) error {
	log := logr.FromContextOrDiscard(ctx)
	ctrl.SetLogger(log)
	cfg, err := restConfig(s.Kubeconfig)
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := checkLeaderElection(s); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Logger:                  log,
		Cache:                   controller.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: s.MetricsAddr},
		HealthProbeBindAddress:  s.HealthAddr,
		LeaderElection:          s.LeaderElect,
		LeaderElectionID:        s.LeaseID,
		LeaderElectionNamespace: s.LeaseNamespace,
		LeaseDuration:           &s.LeaseDuration,
		RenewDeadline:           &s.RenewDeadline,
		RetryPeriod:             &s.RetryPeriod,
		// A replica that stops (SIGTERM) hands the Lease over at once
		// instead of making the others wait out its duration.
		LeaderElectionReleaseOnCancel: true,
		BaseContext:                   func() context.Context { return ctx },
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}

	cacheHost, cacheCreds, err := cache(ctx, s, mgr)
	if err != nil {
		return err
	}
	b, err := builder.New(builder.Config{
		CacheHost:        cacheHost,
		CacheCredentials: cacheCreds,
		Concurrency:      s.LayerConcurrency,
		TempDir:          s.TempDir,
		UserAgent:        "hermes-controller",
		PlainHTTP:        builder.PlainHTTPFor(s.PlainHTTP),
	})
	if err != nil {
		return err
	}
	var plats []ocispec.Platform
	if s.Platforms != "" {
		if plats, _, err = builder.ParsePlatforms(s.Platforms); err != nil {
			return fmt.Errorf("%w: --platforms: %w", cli.ErrUsage, err)
		}
	}
	var gc *artifacts.Cache
	if s.ArtifactGCInterval > 0 {
		gc = &artifacts.Cache{Host: cacheHost, PlainHTTP: builder.PlainHTTPFor(s.PlainHTTP)(cacheHost),
			Client: &auth.Client{Client: retry.DefaultClient, Header: http.Header{"User-Agent": {"hermes-controller"}}, Cache: auth.NewCache(), Credential: cacheCreds}}
	}
	if _, err := controller.Setup(mgr, controller.Options{
		Builder: b, Platforms: plats, Cache: gc, GCInterval: s.ArtifactGCInterval, BuildConcurrency: s.BuildConcurrency, BuildTimeout: s.BuildTimeout,
		ResolveWorkers: s.ResolveWorkers, ResolveTTL: s.ResolveTTL, Resync: s.Resync,
		RecheckFailed: s.RecheckFailed, RetryBase: s.RetryBase, RetryMax: s.RetryMax, StatusInterval: s.StatusInterval,
	}); err != nil {
		return err
	}
	log.Info("starting", "cache", cacheHost, "embeddedRegistry", s.CacheRegistry == "", "leaderElection", s.LeaderElect, "artifactGCInterval", s.ArtifactGCInterval)
	return mgr.Start(ctx)
}

// cache serves the registry in-process (the default) and returns where
// builds push and with which credential; or, with --cache-registry, the
// remote registry's.
func cache(ctx context.Context, s *settings, mgr ctrl.Manager) (string, auth.CredentialFunc, error) {
	password := ""
	if s.CachePasswordFile != "" {
		b, err := os.ReadFile(s.CachePasswordFile)
		if err != nil {
			return "", nil, fmt.Errorf("%w: --cache-password-file: %w", cli.ErrUsage, err)
		}
		password = strings.TrimSpace(string(b))
	}
	if s.CacheRegistry != "" {
		if password == "" {
			return s.CacheRegistry, nil, nil
		}
		return s.CacheRegistry, auth.StaticCredential(s.CacheRegistry, auth.Credential{Username: s.CacheUsername, Password: password}), nil
	}
	if s.TLSCert != "" {
		return "", nil, fmt.Errorf("%w: --tls-cert: the in-process registry serves plain HTTP to builds on loopback; terminate TLS in front of it, or run hermes-registry apart with --cache-registry", cli.ErrUsage)
	}
	reg := s.Settings
	if password == "" {
		// Builds need a write credential, and nobody else should have one
		// by default: the controller makes a token of its own.
		tok, file, err := ownToken()
		if err != nil {
			return "", nil, err
		}
		if reg.TokenFile != "" {
			b, err := os.ReadFile(reg.TokenFile)
			if err != nil {
				return "", nil, fmt.Errorf("%w: --token-file: %w", cli.ErrUsage, err)
			}
			tok = strings.TrimSpace(string(b))
		} else {
			reg.TokenFile = file
		}
		password = tok
	}
	srv, err := registry.NewServer(ctx, reg, crmetrics.Registry)
	if err != nil {
		return "", nil, err
	}
	addr, err := srv.Listen()
	if err != nil {
		return "", nil, err
	}
	if err := mgr.Add(srv); err != nil {
		return "", nil, err
	}
	if c := srv.Registry().Collector(); c != nil {
		if err := mgr.Add(c); err != nil { // on the leader only
			return "", nil, err
		}
	}
	if err := mgr.AddReadyzCheck("registry", func(req *http.Request) error { return srv.Registry().Ready(req.Context()) }); err != nil {
		return "", nil, err
	}
	host := net.JoinHostPort("127.0.0.1", fmt.Sprint(addr.(*net.TCPAddr).Port))
	return host, auth.StaticCredential(host, auth.Credential{Username: "hermes-controller", Password: password}), nil
}

// serviceAccountNamespace is where a Pod finds its own namespace, which
// is the Lease's by default.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// checkLeaderElection says in a sentence what controller-runtime and
// client-go would refuse later, less clearly.
func checkLeaderElection(s *settings) error {
	if !s.LeaderElect {
		return nil
	}
	if s.LeaseNamespace == "" {
		if _, err := os.Stat(serviceAccountNamespace); err != nil {
			return fmt.Errorf("%w: leader election needs --leader-election-namespace outside a cluster (or --leader-elect=false for a single replica)", cli.ErrUsage)
		}
	}
	if s.LeaseDuration <= s.RenewDeadline || s.RenewDeadline <= s.RetryPeriod || s.RetryPeriod <= 0 {
		return fmt.Errorf("%w: need --lease-duration (%s) > --renew-deadline (%s) > --retry-period (%s) > 0", cli.ErrUsage, s.LeaseDuration, s.RenewDeadline, s.RetryPeriod)
	}
	return nil
}

// ownToken makes a random write token in a private file.
func ownToken() (string, string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	dir, err := os.MkdirTemp("", "hermes-controller-")
	if err != nil {
		return "", "", fmt.Errorf("token file: %w", err)
	}
	tok := hex.EncodeToString(b)
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("token file: %w", err)
	}
	return tok, file, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		return c, nil
	}
	c, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes config (in-cluster, or --kubeconfig): %w", err)
	}
	return c, nil
}
