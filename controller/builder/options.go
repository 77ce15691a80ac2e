package builder

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Defaults of the settings: `soci create`'s, plus file alignment.
const (
	DefaultMinLayerSize = 10 << 20 // 10 MiB
	DefaultSpanSize     = 4 << 20  // 4 MiB
	// DefaultAlignFilesFrom: files from a quarter span up start a span of
	// their own; reading one whole then fetches about the file, not up to
	// a span before and after it, for one more checkpoint (32 KiB of zTOC).
	DefaultAlignFilesFrom = DefaultSpanSize / 4
	// DefaultBuildToolIdentifier is written into every zTOC and the index.
	DefaultBuildToolIdentifier = "Hermes SOCI builder v1"
)

// DefaultSettings are the settings a build uses unless told otherwise; the
// library, `hermes build` and the controller all start from them.
func DefaultSettings() Settings {
	return Settings{
		MinLayerSize:        DefaultMinLayerSize,
		SpanSize:            DefaultSpanSize,
		AlignFilesFrom:      DefaultAlignFilesFrom,
		BuildToolIdentifier: DefaultBuildToolIdentifier,
	}
}

// Config holds what stays the same for every build of one Builder.
type Config struct {
	// CacheHost is the cache registry, host[:port]. Required.
	CacheHost string
	// CacheCredentials authenticate writes to the cache registry; nil means
	// anonymous.
	CacheCredentials auth.CredentialFunc
	// Concurrency bounds the layers fetched and indexed at once; 0 means the
	// number of CPUs. A gzip layer in flight needs no temp disk; a plain tar
	// layer (or any layer with StageLayers) is staged in one temp file of
	// its size.
	Concurrency int
	// TempDir is where layer blobs are staged; empty means os.TempDir().
	TempDir string
	// PlainHTTP says whether to talk plain HTTP to a registry host; nil means
	// plain HTTP for loopback hosts (localhost, 127.0.0.0/8, ::1) only.
	PlainHTTP func(host string) bool
	// HTTPClient sends the requests; nil means oras-go's retrying client.
	// Authentication is layered on top of it.
	HTTPClient *http.Client
	// UserAgent is sent with every request; empty means "hermes-build".
	UserAgent string
	// Now is the clock that dates indexes (artifacts.AnnotationCreated);
	// nil means time.Now.
	Now func() time.Time
	// StageLayers stages every layer in a temp file and builds its zTOC
	// with soci's file-based builder, as `soci create` does, instead of
	// indexing gzip layers in one pass while they stream. soci's builder
	// does not align files (Settings.AlignFilesFrom is treated as off); the
	// zTOCs are otherwise the same. Staging is slower and needs temp disk.
	// For comparison and as an escape hatch.
	StageLayers bool
}

// Settings decide what the index contains. Two builds with equal Settings of
// the same manifest produce the same index; they are recorded on the index so
// that a later build can tell whether it already exists. Every value is
// taken as written (zero is not "default"): start from DefaultSettings.
type Settings struct {
	// MinLayerSize: layers smaller than this (compressed) get no zTOC; they
	// are fetched whole when a container starts. 0 indexes every layer.
	MinLayerSize int64
	// SpanSize is the uncompressed distance between checkpoints, at least
	// 32 KiB.
	SpanSize int64
	// AlignFilesFrom: in gzip layers, a regular file of at least this many
	// bytes begins a span of its own (at the deflate block boundary before
	// its data), so a container that reads it whole fetches little more
	// than the file. 0 (or less) turns alignment off, and the zTOCs are
	// then byte-identical to soci's. Keep it about a quarter of SpanSize
	// (WithSpanSize does).
	AlignFilesFrom int64
	// XAttrOptimization marks zTOCs of layers without extended attributes or
	// opaque directories so the snapshotter skips xattr lookups for them
	// (soci's "xattr" optimization).
	XAttrOptimization bool
	// BuildToolIdentifier is written into every zTOC and the index. zTOCs
	// are byte-identical to soci's own for the same identifier.
	BuildToolIdentifier string
}

// WithSpanSize returns s with SpanSize n and, unless alignment is off,
// files aligned from a quarter of it.
func (s Settings) WithSpanSize(n int64) Settings {
	s.SpanSize = n
	if s.AlignFilesFrom > 0 {
		s.AlignFilesFrom = n / 4
	}
	return s
}

// Validate reports settings no build can use, wrapping ErrInvalidRequest.
func (s Settings) Validate() error {
	if s == (Settings{}) {
		return fmt.Errorf("%w: no settings (start from DefaultSettings)", ErrInvalidRequest)
	}
	if s.MinLayerSize < 0 {
		return fmt.Errorf("%w: min layer size %d is negative", ErrInvalidRequest, s.MinLayerSize)
	}
	// The C zinfo code keeps offsets in signed 64-bit and needs room for a
	// 32 KiB window per checkpoint; spans below that make no sense.
	if s.SpanSize < 1<<15 {
		return fmt.Errorf("%w: span size %d is below 32 KiB", ErrInvalidRequest, s.SpanSize)
	}
	if s.BuildToolIdentifier == "" {
		return fmt.Errorf("%w: empty build tool identifier", ErrInvalidRequest)
	}
	return nil
}

// Annotation is how the settings are recorded on the index manifest
// (artifacts.AnnotationSettings), for idempotency.
// Key order is fixed so that equal settings give equal strings.
func (s Settings) Annotation() string {
	opts := []string{}
	if s.XAttrOptimization {
		opts = append(opts, "xattr")
	}
	sort.Strings(opts)
	a := "min-layer-size=" + strconv.FormatInt(s.MinLayerSize, 10) +
		",span-size=" + strconv.FormatInt(s.SpanSize, 10)
	if s.AlignFilesFrom > 0 {
		a += ",align-files-from=" + strconv.FormatInt(s.AlignFilesFrom, 10)
	}
	return a + ",optimizations=" + strings.Join(opts, "+")
}

// Request is one build: an image and the platforms to index.
type Request struct {
	// Image is an image reference as users write it: "nginx",
	// "ghcr.io/org/app:1.2", "host:5000/a/b@sha256:...". Short Docker Hub
	// names are normalized.
	Image string
	// Platforms to index; empty means linux/amd64. A single-platform image is
	// indexed when its config's platform matches one of them (or names none).
	Platforms []ocispec.Platform
	// AllPlatforms indexes every platform manifest of a multi-platform image
	// (attestation manifests excluded) and ignores Platforms.
	AllPlatforms bool
	// Settings of the index; start from DefaultSettings.
	Settings Settings
	// OriginCredentials authenticate reads from the image's registry; nil
	// means anonymous.
	OriginCredentials auth.CredentialFunc
	// Progress, if set, is called for every layer event. Calls come from
	// several goroutines, one layer at a time each; it must not block long.
	Progress func(Progress)
}

// DefaultPlatform is the platform built when a request names none.
var DefaultPlatform = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// ParsePlatforms parses a comma-separated platform list ("linux/amd64,
// linux/arm64/v8"). "all" selects every platform (the second result).
func ParsePlatforms(s string) ([]ocispec.Platform, bool, error) {
	var out []ocispec.Platform
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if f == "all" {
			return nil, true, nil
		}
		p, err := platforms.Parse(f)
		if err != nil {
			return nil, false, fmt.Errorf("%w: platform %q: %w", ErrInvalidRequest, f, err)
		}
		out = append(out, p)
	}
	return out, false, nil
}

func (c Config) withDefaults() (Config, error) {
	if c.CacheHost == "" {
		return c, fmt.Errorf("%w: no cache registry host", ErrInvalidRequest)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = runtime.NumCPU()
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	if c.PlainHTTP == nil {
		c.PlainHTTP = IsLoopback
	}
	if c.UserAgent == "" {
		c.UserAgent = "hermes-build"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// PlainHTTPFor returns a Config.PlainHTTP that speaks plain HTTP to
// loopback hosts and to the comma-separated hosts listed.
func PlainHTTPFor(hosts string) func(host string) bool {
	var list []string
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			list = append(list, h)
		}
	}
	return func(h string) bool { return IsLoopback(h) || slices.Contains(list, h) }
}

// IsLoopback reports whether host[:port] names this machine; registries there
// are spoken to over plain HTTP by default, as containerd does.
func IsLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
