package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/hermes-oci/hermes/registry/gc"
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
	// to show. Zero means DefaultReferrersCacheTTL, right for replicas over
	// shared storage. Negative keeps a set until a write through this
	// process changes it or it is evicted: right for a single replica only.
	ReferrersCacheTTL time.Duration
	// ReferrersCacheSize is the most subjects kept in memory (default 65536).
	ReferrersCacheSize int
	// ReferrersPageSize is the most referrers in one page of a Referrers
	// API answer (default referrers.DefaultPageSize); a page also stays
	// under referrers.DefaultPageBytes. Longer lists are paginated with a
	// Link header, as the distribution spec prescribes.
	ReferrersPageSize int
	// Metrics receives the registry's collectors; nil registers none.
	Metrics prometheus.Registerer
	// GC configures online garbage collection (package registry/gc). A
	// zero GC collects nothing; Registry.Collector is then nil.
	GC GCConfig
}

// GCConfig configures online garbage collection.
type GCConfig struct {
	// Interval between runs; zero disables collection in this process.
	Interval time.Duration
	// Grace: what was written or used less than Grace before a run is kept
	// (zero: gc.DefaultGrace).
	Grace time.Duration
}

// DefaultReferrersCacheTTL is the ReferrersCacheTTL of a zero Config and
// the default of --referrers-cache-ttl: see Settings for why.
const DefaultReferrersCacheTTL = 5 * time.Second

// FilesystemStorage is the storage configuration for a directory.
func FilesystemStorage(root string) configuration.Storage {
	return configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": root}}
}

// Registry is the cache registry's HTTP handler.
type Registry struct {
	app     *handlers.App
	driver  storagedriver.StorageDriver
	refs    *referrers.Cache
	inUse   *gc.InUse     // nil without garbage collection
	gc      *gc.Collector // nil without garbage collection
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

	ttl := cfg.ReferrersCacheTTL
	switch {
	case ttl == 0:
		ttl = DefaultReferrersCacheTTL
	case ttl < 0:
		ttl = 0 // referrers.CacheOptions: no expiry
	}
	var (
		cache *referrers.Cache
		inUse *gc.InUse
	)
	if cfg.GC.Interval < 0 || cfg.GC.Grace < 0 {
		return nil, fmt.Errorf("%w: garbage collection interval %s and grace %s must not be negative", ErrConfig, cfg.GC.Interval, cfg.GC.Grace)
	}
	if cfg.GC.Interval > 0 {
		inUse = gc.NewInUse()
	}
	app, hook, err := newApp(ctx, dcfg, inUse, func(d storagedriver.StorageDriver, ns distribution.Namespace) referrers.Store {
		cache = referrers.NewCache(referrers.NewDriver(d), referrers.CacheOptions{
			TTL: ttl, Size: cfg.ReferrersCacheSize, PageSize: cfg.ReferrersPageSize, Filter: existsFilter(ns),
		})
		return cache
	})
	if err != nil {
		return nil, err
	}
	log := logr.FromContextOrDiscard(ctx)
	if cfg.Auth.AnonymousWrites {
		// logr has no warning level; the slog handler underneath has.
		slog.New(logr.ToSlogHandler(log)).Warn("anonymous writes are allowed: anyone who reaches the registry can push and delete")
	}
	r := &Registry{app: app, driver: hook.driver, refs: cache, inUse: inUse, auth: a, metrics: m, log: log}
	if cfg.GC.Interval > 0 {
		if r.gc, err = gc.New(hook.driver, gc.Options{
			Interval: cfg.GC.Interval, Grace: cfg.GC.Grace, InUse: inUse, Referrers: cache, Metrics: cfg.Metrics,
		}); err != nil {
			app.Shutdown()
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	return r, nil
}

// Collector is the registry's garbage collector, nil when Config.GC
// disables it. It is a leader-only Runnable: run it on one replica.
func (r *Registry) Collector() *gc.Collector { return r.gc }

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
	asked := req.URL.Path // before the name rewrite: next-page links repeat the client's own path
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
	r.touch(req, rt, query)
	switch {
	case mirrorTagRequest(req, rt, query):
		// A tag the builder stored can be older than the origin's: a mirror
		// (containerd sends ?ns=) never resolves one here, it falls through
		// to the next host, which has the current tag.
		writeError(w, errcode.ErrorCodeManifestUnknown.WithDetail("tags are not resolved through the cache as a mirror; ask by digest"))
	case rt.kind == routeReferrers:
		r.serveReferrers(w, req, rt, query, asked)
	case rt.kind == routeManifest && req.Method == http.MethodPut:
		r.serveManifestPut(w, req, rt)
	default:
		if alias := aliasOf(req, rt); alias != "" {
			w = aliasHeaders(w, alias)
		}
		r.app.ServeHTTP(w, req)
	}
}

// touch tells the garbage collector about a blob this request relies on
// before the request is served: a read (HEAD before a push skips the
// upload), an upload's completion, a cross-repository mount. Manifest PUTs
// report what they name in the manifest service (distribution.go).
func (r *Registry) touch(req *http.Request, rt route, query url.Values) {
	if r.inUse == nil {
		return
	}
	var s string
	switch {
	case rt.kind == routeBlob && (req.Method == http.MethodGet || req.Method == http.MethodHead):
		s = rt.ref
	case rt.kind == routeUpload && req.Method == http.MethodPut:
		s = query.Get("digest")
	case rt.kind == routeUpload && req.Method == http.MethodPost:
		if s = query.Get("mount"); s == "" {
			s = query.Get("digest")
		}
	}
	if d, err := digest.Parse(s); err == nil {
		r.inUse.Touch(d)
	}
}

// mirrorTagRequest reports whether req reads a manifest by tag as a mirror
// does: with the ns parameter containerd adds for mirror hosts.
func mirrorTagRequest(req *http.Request, rt route, query url.Values) bool {
	return rt.kind == routeManifest && (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
		query.Get("ns") != "" && !strings.Contains(rt.ref, ":") // a tag never contains ":", a digest always does
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

// serveReferrers answers the Referrers API, a page at a time: a list
// longer than a page (referrers.Query) ends with a Link header to the next,
// which repeats the request with "last" set to the last referrer listed.
// "n" asks for smaller pages, as for tags.
func (r *Registry) serveReferrers(w http.ResponseWriter, req *http.Request, rt route, query url.Values, asked string) {
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
	q := referrers.Query{ArtifactType: artifactType}
	if v := query.Get("last"); v != "" {
		if q.After, err = digest.Parse(v); err != nil {
			writeError(w, errcode.Error{Code: errcode.ErrorCodeDigestInvalid, Message: `pagination marker "last" is not a digest`, Detail: fmt.Sprintf("%.300s", v)})
			return
		}
	}
	if v := query.Get("n"); v != "" {
		if q.Limit, err = strconv.Atoi(v); err != nil || q.Limit < 1 {
			writeError(w, errcode.ErrorCodePaginationNumberInvalid.WithDetail(fmt.Sprintf("n=%.40s: want a positive number", v)))
			return
		}
	}
	page, hit, err := r.refs.Lookup(req.Context(), rt.name, subject, q)
	r.metrics.referrerLookup(hit, page.Count, err)
	if err != nil {
		r.log.Error(err, "referrers lookup", "repository", rt.name, "subject", subject)
		writeError(w, errcode.ErrorCodeUnknown.WithDetail("referrers lookup failed"))
		return
	}
	// Canonical keys set directly: this is the hot path of every node.
	h := w.Header()
	h["Content-Type"] = indexContentType
	h["Content-Length"] = []string{strconv.Itoa(len(page.Body))}
	h["Docker-Distribution-Api-Version"] = apiVersion
	if artifactType != "" {
		h["Oci-Filters-Applied"] = filtersApplied
	}
	if page.Next != "" {
		h["Link"] = []string{nextLink(asked, query, artifactType, page.Next)}
	}
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(page.Body)
	}
}

// nextLink is the Link header (RFC 8288, as the distribution spec has it for
// tags) to the page after last: the same path and query, "last" replaced.
func nextLink(path string, query url.Values, artifactType string, last digest.Digest) string {
	next := make(url.Values, len(query)+1)
	for k, v := range query {
		next[k] = v
	}
	if artifactType != "" {
		next.Set("artifactType", artifactType) // as understood, with its "+"
	}
	next.Set("last", last.String())
	u := url.URL{Path: path, RawQuery: next.Encode()}
	return "<" + u.String() + `>; rel="next"`
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
