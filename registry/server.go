package registry

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hermes-oci/hermes/registry/cli"
)

// Settings are the registry's command-line settings: hermes-registry and
// hermes-controller (which serves the same registry in-process) embed them
// in their settings structs (package registry/cli), so both read them the
// same way. The env names get the binary's prefix.
type Settings struct {
	Addr                 string        `arg:"--addr,env:ADDR" default:":5000" placeholder:"HOST:PORT" help:"listen address of the registry API"`
	TLSCert              string        `arg:"--tls-cert,env:TLS_CERT" placeholder:"FILE" help:"TLS certificate; with --tls-key, serve HTTPS"`
	TLSKey               string        `arg:"--tls-key,env:TLS_KEY" placeholder:"FILE" help:"TLS private key"`
	Root                 string        `arg:"--root,env:ROOT" default:"/var/lib/hermes-registry" placeholder:"DIR" help:"filesystem storage directory, used when --storage-config is not set"`
	StorageConfig        string        `arg:"--storage-config,env:STORAGE_CONFIG" placeholder:"FILE" help:"distribution configuration file (version 0.1) whose storage section is used, e.g. s3; REGISTRY_STORAGE_* variables override it as in distribution"`
	HTTPSecret           string        `arg:"--http-secret,env:HTTP_SECRET" placeholder:"SECRET" help:"secret signing upload state; replicas must share it (default: random per process)"`
	Htpasswd             string        `arg:"--htpasswd,env:HTPASSWD" placeholder:"FILE" help:"htpasswd file (bcrypt) of users allowed to write"`
	TokenFile            string        `arg:"--token-file,env:TOKEN_FILE" placeholder:"FILE" help:"file holding a bearer token allowed to write (also accepted as a Basic auth password)"`
	Realm                string        `arg:"--realm,env:REALM" default:"hermes-registry" help:"realm in the Basic auth challenge"`
	AuthReads            bool          `arg:"--auth-reads,env:AUTH_READS" help:"require a credential for reads too"`
	AllowAnonymousWrites bool          `arg:"--allow-anonymous-writes,env:ALLOW_ANONYMOUS_WRITES" help:"let anyone push and delete when neither --htpasswd nor --token-file is set (tests, demos); logged as a warning at start"`
	DisableDelete        bool          `arg:"--disable-delete,env:DISABLE_DELETE" help:"refuse DELETE requests"`
	ReferrersCacheTTL    time.Duration `arg:"--referrers-cache-ttl,env:REFERRERS_CACHE_TTL" default:"5s" placeholder:"DURATION" help:"how long a referrer set read from storage is served from memory, so the most a referrer written through another replica over shared storage takes to show here; 5s is little next to the 30s a node remembers \"no index\" and costs each replica at most one storage listing per subject every 5s; 0: until changed through this process (a single replica only)"`
	ReferrersCacheSize   int           `arg:"--referrers-cache-size,env:REFERRERS_CACHE_SIZE" default:"65536" placeholder:"N" help:"most subjects whose referrers are kept in memory"`
	GCInterval           time.Duration `arg:"--blob-gc-interval,env:BLOB_GC_INTERVAL" default:"1h" placeholder:"DURATION" help:"online garbage collection of unreferenced blobs and untagged manifests in the registry's storage this often; 0 disables (run it on one replica only: hermes-controller runs it on its leader)"`
	GCGrace              time.Duration `arg:"--blob-gc-grace,env:BLOB_GC_GRACE" default:"1h" placeholder:"DURATION" help:"blob garbage collection keeps whatever was written or used less than this long before it runs; keep it longer than a build"`
}

// Config returns the registry Config the settings describe, reading the
// storage configuration file if one is named. metrics receives the
// registry's collectors (nil: none).
func (s Settings) Config(metrics prometheus.Registerer) (Config, error) {
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return Config{}, fmt.Errorf("%w: --tls-cert and --tls-key go together", ErrConfig)
	}
	hasCredential := s.Htpasswd != "" || s.TokenFile != ""
	switch {
	case !hasCredential && !s.AllowAnonymousWrites && !s.AuthReads: // --auth-reads alone: New says reads need a credential
		return Config{}, fmt.Errorf("%w: %w: give --htpasswd or --token-file, or --allow-anonymous-writes to let anyone push and delete", ErrConfig, ErrNoWriteCredential)
	case hasCredential && s.AllowAnonymousWrites:
		return Config{}, fmt.Errorf("%w: --allow-anonymous-writes contradicts --htpasswd and --token-file; keep one", ErrConfig)
	}
	if s.ReferrersCacheTTL < 0 {
		return Config{}, fmt.Errorf("%w: --referrers-cache-ttl %s is negative", ErrConfig, s.ReferrersCacheTTL)
	}
	if s.GCInterval < 0 || s.GCGrace <= 0 && s.GCInterval > 0 {
		return Config{}, fmt.Errorf("%w: --blob-gc-interval %s must not be negative and --blob-gc-grace %s must be positive", ErrConfig, s.GCInterval, s.GCGrace)
	}
	ttl := s.ReferrersCacheTTL
	if ttl == 0 {
		ttl = -1 // Config: until changed here
	}
	storage := FilesystemStorage(s.Root)
	if s.StorageConfig != "" {
		var err error
		if storage, err = LoadStorageConfig(s.StorageConfig); err != nil {
			return Config{}, err
		}
	}
	return Config{
		Storage:       storage,
		DisableDelete: s.DisableDelete,
		HTTPSecret:    s.HTTPSecret,
		Auth: AuthConfig{
			HtpasswdFile: s.Htpasswd, TokenFile: s.TokenFile, RequireRead: s.AuthReads, Realm: s.Realm,
			AnonymousWrites: s.AllowAnonymousWrites,
		},
		ReferrersCacheTTL:  ttl,
		ReferrersCacheSize: s.ReferrersCacheSize,
		Metrics:            metrics,
		GC:                 GCConfig{Interval: s.GCInterval, Grace: s.GCGrace},
	}, nil
}

// LoadStorageConfig reads the storage section of a distribution
// configuration file (version 0.1). distribution's REGISTRY_STORAGE_*
// environment variables override the file, as in distribution itself.
func LoadStorageConfig(path string) (configuration.Storage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: storage config: %w", ErrConfig, err)
	}
	defer f.Close()
	dc, err := configuration.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%w: storage config %s: %w", ErrConfig, path, err)
	}
	return dc.Storage, nil
}

// Server serves a Registry's API on one listener until its context ends.
// It is a controller-runtime Runnable (Start), so a manager can run it
// beside the controller; hermes-registry runs it alone. Every replica
// serves: it does not need leader election.
type Server struct {
	reg      *Registry
	addr     string
	tlsCert  string
	tlsKey   string
	listener net.Listener
}

// NewServer builds the registry s describes and a Server for it. ctx
// carries the logger and bounds distribution's background work.
func NewServer(ctx context.Context, s Settings, metrics prometheus.Registerer) (*Server, error) {
	cfg, err := s.Config(metrics)
	if err != nil {
		return nil, err
	}
	reg, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Server{reg: reg, addr: s.Addr, tlsCert: s.TLSCert, tlsKey: s.TLSKey}, nil
}

// Registry is the handler the Server serves.
func (s *Server) Registry() *Registry { return s.reg }

// Listen binds the API address now, so that a caller learns a bad address
// (or the port ":0" picked) before Start; Start listens itself otherwise.
func (s *Server) Listen() (net.Addr, error) {
	if s.listener != nil {
		return s.listener.Addr(), nil
	}
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("registry API: %w", err)
	}
	s.listener = l
	return l.Addr(), nil
}

// NeedLeaderElection tells a controller-runtime manager to run the Server
// on every replica.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends, then stops accepting, lets requests in
// flight finish for up to 10 seconds, and closes the registry.
func (s *Server) Start(ctx context.Context) error {
	defer s.reg.Close()
	if _, err := s.Listen(); err != nil {
		return err
	}
	tls := s.tlsCert != ""
	err := cli.Serve(ctx, "registry", s.listener, s.reg, func(srv *http.Server, l net.Listener) error {
		if tls {
			return srv.ServeTLS(l, s.tlsCert, s.tlsKey)
		}
		return srv.Serve(l)
	})
	return err
}
