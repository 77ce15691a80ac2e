package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/distribution/v3/registry/handlers"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/felixge/httpsnoop"
	"github.com/go-logr/logr"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hermes-oci/hermes/registry/names"
	"github.com/hermes-oci/hermes/registry/referrers"
)

// ErrConfig is wrapped by errors about an unusable Config.
var ErrConfig = errors.New("invalid registry configuration")

// Config configures a Registry.
type Config struct {
	// Storage is distribution's storage configuration, the "storage" section
	// of its configuration file: filesystem, inmemory, s3, gcs, azure, with
	// their parameters, plus "delete", "redirect", "cache", "maintenance".
	// The driver must be registered with distribution's factory (import
	// the driver package, or registry/drivers for all of them).
	Storage configuration.Storage
	// DisableDelete refuses DELETE requests. Deletes are on by default: the
	// controller removes indexes it no longer wants.
	DisableDelete bool
	// HTTPSecret signs blob upload state. Replicas behind one Service must
	// share it; empty picks a random one for this process.
	HTTPSecret string
	// Auth says who may read and write.
	Auth AuthConfig
	// ReferrersCacheTTL bounds how long a referrer set read from storage is
	// served from memory. Writes through this process are seen at once; the
	// TTL is how long writes by other replicas over shared storage may take
	// to show. Zero: until written or evicted (one replica).
	ReferrersCacheTTL time.Duration
	// ReferrersCacheSize is the most subjects kept in memory (default 65536).
	ReferrersCacheSize int
	// Metrics receives the registry's collectors; nil registers none.
	Metrics prometheus.Registerer
}

// FilesystemStorage is the storage configuration for a directory.
func FilesystemStorage(root string) configuration.Storage {
	return configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": root}}
}

// Registry is the cache registry's HTTP handler.
type Registry struct {
	app     *handlers.App
	driver  storagedriver.StorageDriver
	refs    *referrers.Cache
	auth    *authenticator
	metrics *metrics
	log     logr.Logger

	namesMemo    sync.Map // name + "\x00" + ns -> cache repository
	namesMemoLen atomic.Int64
}

var _ http.Handler = (*Registry)(nil)

// New builds a Registry. ctx carries the logger (logr) and bounds the life
// of distribution's background work (upload purging); Close ends it too.
func New(ctx context.Context, cfg Config) (*Registry, error) {
	if cfg.Storage.Type() == "" {
		return nil, fmt.Errorf("%w: no storage driver configured", ErrConfig)
	}
	a, err := newAuthenticator(cfg.Auth)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	storage := configuration.Storage{}
	for k, v := range cfg.Storage {
		storage[k] = v
	}
	if _, ok := storage["delete"]; !ok {
		storage["delete"] = configuration.Parameters{"enabled": !cfg.DisableDelete}
	}
	dcfg := &configuration.Configuration{Storage: storage}
	dcfg.HTTP.Secret = cfg.HTTPSecret
	// Parse sets these defaults for configuration files; NewApp does not,
	// and a zero catalog limit answers every catalog request with nothing.
	dcfg.Catalog.MaxEntries = 1000
	dcfg.Tags.MaxTags = 1000
	// distribution refuses layers with foreign URLs (non-distributable
	// layers) unless allowed, and answers 500 when it does. The cache holds
	// what clients push, and such layers are valid OCI content.
	dcfg.Validation.Manifests.URLs.Allow = []string{"^https?://"}

	var cache *referrers.Cache
	app, hook, err := newApp(ctx, dcfg, func(d storagedriver.StorageDriver, ns distribution.Namespace) referrers.Store {
		cache = referrers.NewCache(referrers.NewDriver(d), referrers.CacheOptions{
			TTL: cfg.ReferrersCacheTTL, Size: cfg.ReferrersCacheSize, Filter: existsFilter(ns),
		})
		return cache
	})
	if err != nil {
		return nil, err
	}
	return &Registry{app: app, driver: hook.driver, refs: cache, auth: a, metrics: m, log: logr.FromContextOrDiscard(ctx)}, nil
}

// Close stops distribution's background work.
func (r *Registry) Close() error { return r.app.Shutdown() }

// Ready returns nil when the storage driver answers.
func (r *Registry) Ready(ctx context.Context) error {
	_, err := r.driver.List(ctx, "/")
	if err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
		return fmt.Errorf("storage %s: %w", r.driver.Name(), err)
	}
	return nil
}

// ServeHTTP serves the distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	rt := parseRoute(req.URL.Path)
	var (
		code    int
		written int64
	)
	w = httpsnoop.Wrap(w, httpsnoop.Hooks{
		WriteHeader: func(next httpsnoop.WriteHeaderFunc) httpsnoop.WriteHeaderFunc {
			return func(c int) {
				if code == 0 {
					code = c
				}
				next(c)
			}
		},
		Write: func(next httpsnoop.WriteFunc) httpsnoop.WriteFunc {
			return func(b []byte) (int, error) {
				if code == 0 {
					code = http.StatusOK
				}
				n, err := next(b)
				written += int64(n)
				return n, err
			}
		},
		ReadFrom: func(next httpsnoop.ReadFromFunc) httpsnoop.ReadFromFunc {
			return func(src io.Reader) (int64, error) {
				if code == 0 {
					code = http.StatusOK
				}
				n, err := next(src)
				written += n
				return n, err
			}
		},
	})
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			r.log.Error(fmt.Errorf("%v", p), "panic serving request", "method", req.Method, "path", req.URL.Path)
			if code == 0 {
				writeError(w, errcode.ErrorCodeUnknown.WithDetail("internal error"))
			}
		}
		if code == 0 {
			code = http.StatusOK
		}
		d := time.Since(start)
		r.metrics.observe(rt.kind, req.Method, code, written, d)
		if l := r.log.V(levelFor(code, req.Method)); l.Enabled() {
			l.Info("request", "method", req.Method, "path", req.URL.Path,
				"query", req.URL.RawQuery, "route", rt.kind, "code", code, "bytes", written, "duration", d)
		}
	}()
	r.serve(w, req, rt)
}

// levelFor logs server errors and writes at info, reads at debug.
func levelFor(code int, method string) int {
	if code >= 500 || (method != http.MethodGet && method != http.MethodHead) {
		return 0
	}
	return 1
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request, rt route) {
	query := req.URL.Query()
	if rt.name != "" {
		repo, err := r.repository(rt.name, query.Get("ns"))
		if err != nil {
			writeError(w, errcode.ErrorCodeNameInvalid.WithDetail(err.Error()))
			return
		}
		if repo != rt.name {
			// Serve the cache repository; distribution routes on the path.
			req.URL.Path = "/v2/" + repo + rt.suffix
			req.URL.RawPath = ""
			rt.name = repo
		}
	}
	if err := checkPagination(req, rt); err != nil {
		writeError(w, err)
		return
	}
	if err := r.auth.check(req, rt); err != nil {
		r.auth.challenge(w)
		writeError(w, errcode.ErrorCodeUnauthorized.WithDetail(err.Error()))
		return
	}
	switch {
	case rt.kind == routeReferrers:
		r.serveReferrers(w, req, rt, query)
	case rt.kind == routeManifest && req.Method == http.MethodPut:
		r.serveManifestPut(w, req, rt)
	default:
		if alias := aliasOf(req, rt); alias != "" {
			w = aliasHeaders(w, alias)
		}
		r.app.ServeHTTP(w, req)
	}
}

// aliasOf returns the non-sha256 digest a blob request names, if any.
func aliasOf(req *http.Request, rt route) digest.Digest {
	var s string
	switch {
	case rt.kind == routeBlob && (req.Method == http.MethodGet || req.Method == http.MethodHead):
		s = rt.ref
	case rt.kind == routeUpload && req.Method == http.MethodPut:
		s = req.URL.Query().Get("digest")
	case rt.kind == routeUpload && req.Method == http.MethodPost:
		q := req.URL.Query()
		if s = q.Get("mount"); s == "" {
			s = q.Get("digest")
		}
	}
	if d := digest.Digest(s); s != "" && isAlias(d) {
		return d
	}
	return ""
}

// serveManifestPut hands a manifest PUT to distribution. The manifest
// service learns the subject and records the referrer; the subject travels
// back in the request context and leaves as OCI-Subject on success.
func (r *Registry) serveManifestPut(w http.ResponseWriter, req *http.Request, rt route) {
	note := &putNote{}
	if d := digest.Digest(rt.ref); strings.Contains(rt.ref, ":") && isAlias(d) {
		if err := prepareAliasManifestPut(req, rt.name, d); err != nil {
			writeError(w, err)
			return
		}
		note.alias = d
		w = aliasHeaders(w, d)
	}
	req = req.WithContext(context.WithValue(req.Context(), putNoteKey{}, note))
	w = httpsnoop.Wrap(w, httpsnoop.Hooks{WriteHeader: func(next httpsnoop.WriteHeaderFunc) httpsnoop.WriteHeaderFunc {
		return func(c int) {
			if s, ok := note.subject.Load().(digest.Digest); ok && c == http.StatusCreated {
				w.Header().Set("OCI-Subject", s.String())
			}
			next(c)
		}
	}})
	r.app.ServeHTTP(w, req)
}

func (r *Registry) serveReferrers(w http.ResponseWriter, req *http.Request, rt route, query url.Values) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, errcode.ErrorCodeUnsupported.WithDetail("method not allowed"))
		return
	}
	subject, err := digest.Parse(rt.ref)
	if err != nil {
		writeError(w, errcode.ErrorCodeDigestInvalid.WithDetail(err.Error()))
		return
	}
	// A "+" sent unencoded (curl users type media types as they read them)
	// arrives as a space; media types never contain spaces.
	artifactType := strings.ReplaceAll(query.Get("artifactType"), " ", "+")
	ix, hit, err := r.refs.Lookup(req.Context(), rt.name, subject, artifactType)
	r.metrics.referrerLookup(hit, ix.Count, err)
	if err != nil {
		r.log.Error(err, "referrers lookup", "repository", rt.name, "subject", subject)
		writeError(w, errcode.ErrorCodeUnknown.WithDetail("referrers lookup failed"))
		return
	}
	// Canonical keys set directly: this is the hot path of every node.
	h := w.Header()
	h["Content-Type"] = indexContentType
	h["Content-Length"] = []string{strconv.Itoa(len(ix.Body))}
	h["Docker-Distribution-Api-Version"] = apiVersion
	if artifactType != "" {
		h["Oci-Filters-Applied"] = filtersApplied
	}
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(ix.Body)
	}
}

var anchoredTag = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`)

// checkPagination refuses a "last" marker that cannot name a tag or a
// repository. distribution uses it as a storage path to start listing
// after: a huge one fails in the filesystem (a 500), and ".." would walk
// outside the repository.
func checkPagination(req *http.Request, rt route) error {
	if rt.kind != routeTags && rt.kind != routeCatalog {
		return nil
	}
	last := req.URL.Query().Get("last")
	if last == "" {
		return nil
	}
	if rt.kind == routeTags && !anchoredTag.MatchString(last) {
		return errcode.Error{Code: errcode.ErrorCodeTagInvalid, Message: "pagination marker \"last\" is not a tag", Detail: fmt.Sprintf("%.300s", last)}
	}
	if rt.kind == routeCatalog {
		if _, err := names.FromMirror(last, ""); err != nil {
			return errcode.ErrorCodeNameInvalid.WithDetail("pagination marker \"last\": " + err.Error())
		}
	}
	return nil
}

var (
	indexContentType = []string{"application/vnd.oci.image.index.v1+json"}
	apiVersion       = []string{"registry/2.0"}
	filtersApplied   = []string{"artifactType"}
)

// maxNamesMemo bounds the memo of validated repository names.
const maxNamesMemo = 4096

// repository is names.FromMirror, remembered: nodes ask about the same few
// repositories over and over, and validation runs regular expressions.
func (r *Registry) repository(name, ns string) (string, error) {
	key := name + "\x00" + ns
	if v, ok := r.namesMemo.Load(key); ok {
		return v.(string), nil
	}
	repo, err := names.FromMirror(name, ns)
	if err != nil {
		return "", err // not remembered: bad names must not fill the memo
	}
	if r.namesMemoLen.Add(1) > maxNamesMemo {
		r.namesMemo.Clear()
		r.namesMemoLen.Store(0)
	}
	r.namesMemo.Store(key, repo)
	return repo, nil
}

// writeError answers with the distribution spec's JSON error body.
func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	_ = errcode.ServeJSON(w, err)
}
