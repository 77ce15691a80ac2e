package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/awslabs/soci-snapshotter/config"
	"github.com/pelletier/go-toml/v2"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid hermes-snapshotter configuration")

// Config is the whole configuration file: soci-snapshotter's own sections
// (as its config.toml documents them) and the [hermes] section.
//
//	[hermes]
//	cache_url = "http://hermes-registry.hermes-system.svc:5000"
//	timeout = "2s"              # cache lookup: connect, each response, referrers
//	fetch_timeout = "1m"        # copying an index and its zTOCs from the cache
//	negative_ttl = "30s"        # how long "no index" is remembered per image
//	cache_username = ""         # cache credentials (reads are usually open)
//	cache_password_file = ""    # or cache_password
//	cache_ca_file = ""          # extra CA for an https cache
//	upstream_discovery = false  # then look next to the image, as soci does
//	upstream_timeout = "10s"
//	hosts_dir = "/etc/containerd/certs.d"  # containerd's config_path
//	docker_config = true        # use the node's docker config.json credentials
//	span_cache_max_bytes = 10737418240  # fetched spans kept on disk (idle layers' evicted past it)
//	disk_check_interval = "1m"  # how often node disk is reclaimed besides after removals
//	survive_restarts = true     # running containers keep reading across restarts
//	restart_timeout = "2m"      # then reads of a stopped snapshotter fail with EIO
//	holder_socket = ""          # default <root>/fusesession/holder.sock
//
//	[content_store]             # soci's sections, unchanged
//	containerd_address = "/run/containerd/containerd.sock"
type Config struct {
	Soci   *config.Config
	Hermes Hermes
}

// Hermes is the [hermes] section.
type Hermes struct {
	// CacheURL is the Hermes cache registry, http(s)://host[:port]; empty
	// disables the cache.
	CacheURL string `toml:"cache_url"`
	// CacheUsername/CachePassword authenticate to the cache;
	// CachePasswordFile is read at start instead of CachePassword.
	CacheUsername     string `toml:"cache_username"`
	CachePassword     string `toml:"cache_password"`
	CachePasswordFile string `toml:"cache_password_file"`
	// CacheCAFile adds a CA for an https cache; CacheInsecureSkipVerify
	// skips verification (tests only).
	CacheCAFile             string `toml:"cache_ca_file"`
	CacheInsecureSkipVerify bool   `toml:"cache_insecure_skip_verify"`
	// Timeout bounds a cache lookup; a refused connection fails at once.
	Timeout Duration `toml:"timeout"`
	// FetchTimeout bounds copying a found index and its zTOCs.
	FetchTimeout Duration `toml:"fetch_timeout"`
	// NegativeTTL is how long a missing or failed lookup is remembered.
	NegativeTTL Duration `toml:"negative_ttl"`
	// UpstreamDiscovery looks for an index next to the image at its own
	// registry after the cache, using soci's [pull_modes] soci_v2 (manifest
	// annotation) and soci_v1 (referrers) switches.
	UpstreamDiscovery bool     `toml:"upstream_discovery"`
	UpstreamTimeout   Duration `toml:"upstream_timeout"`
	// HostsDir is containerd's hosts.toml directory (config_path): mirrors,
	// TLS and headers for layer reads. Empty uses each registry's defaults.
	HostsDir string `toml:"hosts_dir"`
	// DockerConfig uses credentials from the node's docker config.json
	// ($DOCKER_CONFIG or ~/.docker) for image registries.
	DockerConfig bool `toml:"docker_config"`
	// MemoryMetadataEntries bounds the file-tree entries (files,
	// directories, links) of lazily mounted layers held in memory, about
	// 300 bytes each; a layer that does not fit is kept in soci's on-disk
	// metadata store, which takes ~50 times longer to mount. 0 keeps all
	// on disk.
	MemoryMetadataEntries int64 `toml:"memory_metadata_entries"`
	// SpanCacheMaxBytes caps the fetched spans kept on disk: past it, the
	// spans of lazily mounted layers that no container uses are dropped,
	// least recently used first, and fetched again if read. Layers in use
	// keep theirs (soci cannot fetch a span twice). 0 is no cap.
	SpanCacheMaxBytes int64 `toml:"span_cache_max_bytes"`
	// DiskCheckInterval is how often node disk is reclaimed besides right
	// after containerd removes snapshots.
	DiskCheckInterval Duration `toml:"disk_check_interval"`
	// SurviveRestarts keeps lazily mounted layers served across restarts
	// of the snapshotter: their FUSE connections are kept by the holder
	// process (`hermes-snapshotter holder`) and served again by the next
	// snapshotter (package fusesession).
	SurviveRestarts bool `toml:"survive_restarts"`
	// RestartTimeout is how long reads of a running container wait for a
	// stopped snapshotter to come back before they fail with EIO.
	RestartTimeout Duration `toml:"restart_timeout"`
	// HolderSocket is the holder's socket; empty: <root>/fusesession/
	// holder.sock. When nothing listens there, the snapshotter starts the
	// holder itself.
	HolderSocket string `toml:"holder_socket"`
}

func defaultHermes() Hermes {
	return Hermes{
		Timeout:         Duration(2 * time.Second),
		FetchTimeout:    Duration(time.Minute),
		NegativeTTL:     Duration(30 * time.Second),
		UpstreamTimeout: Duration(10 * time.Second),
		HostsDir:        "/etc/containerd/certs.d",
		DockerConfig:    true,
		// ~150 MiB: the trees of some 30 images of 15,000 files.
		MemoryMetadataEntries: 500_000,
		// A tenth of a typical 100 GiB node disk.
		SpanCacheMaxBytes: 10 << 30,
		DiskCheckInterval: Duration(time.Minute),
		SurviveRestarts:   true,
		RestartTimeout:    Duration(2 * time.Minute),
	}
}

// Duration is a time.Duration written as a string ("2s", "500ms") in TOML.
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// LoadConfig reads the configuration file at path. A missing file is an
// error when required, otherwise every default applies.
//
// soci's sections are parsed by soci's own loader, so its defaults and
// validation apply. Where the file leaves them unset, Hermes changes a few
// soci defaults to fit a node that gets its indexes through Hermes:
//   - pull_modes.soci_v1.enable = true: upstream discovery finds v1
//     (referrers) indexes without further settings;
//   - background_fetch.disable = true: the origin sends only the spans a
//     container reads, unless asked for more;
//   - snapshotter.allow_invalid_mounts_on_restart = true: a lazily mounted
//     snapshot that cannot be restored after a restart is reported, and
//     does not stop the snapshotter from starting.
func LoadConfig(path string, required bool) (*Config, error) {
	raw, err := os.ReadFile(path)
	missing := errors.Is(err, fs.ErrNotExist) && !required
	if err != nil && !missing {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var tree map[string]any
	if err := toml.Unmarshal(raw, &tree); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	soci := config.NewConfig()
	if soci == nil {
		return nil, fmt.Errorf("%w: soci's defaults do not parse", ErrConfig)
	}
	if !missing {
		// soci's own loader, so that its defaults and checks apply; it
		// ignores the [hermes] section.
		if soci, err = config.NewConfigFromToml(path); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	name := path
	for _, d := range []struct {
		path []string
		set  func()
	}{
		{[]string{"pull_modes", "soci_v1", "enable"}, func() { soci.PullModes.SOCIv1.Enable = true }},
		{[]string{"background_fetch", "disable"}, func() { soci.BackgroundFetchConfig.Disable = true }},
		{[]string{"snapshotter", "allow_invalid_mounts_on_restart"}, func() { soci.SnapshotterConfig.AllowInvalidMountsOnRestart = true }},
	} {
		if !isSet(tree, d.path...) {
			d.set()
		}
	}
	if soci.KubeconfigKeychainConfig.EnableKeychain {
		return nil, fmt.Errorf("%w: %s: [kubeconfig_keychain] is not supported; use [cri_keychain] for Pod pull secrets or docker_config for node credentials", ErrConfig, name)
	}

	h := defaultHermes()
	if sect, ok := tree["hermes"]; ok {
		b, err := toml.Marshal(sect)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: [hermes]: %w", ErrConfig, name, err)
		}
		if err := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields().Decode(&h); err != nil {
			return nil, fmt.Errorf("%w: %s: [hermes]: %w", ErrConfig, name, err)
		}
	}
	if h.CachePassword != "" && h.CachePasswordFile != "" {
		return nil, fmt.Errorf("%w: %s: [hermes]: set cache_password or cache_password_file, not both", ErrConfig, name)
	}
	if h.CachePasswordFile != "" {
		b, err := os.ReadFile(h.CachePasswordFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: [hermes] cache_password_file: %w", ErrConfig, name, err)
		}
		h.CachePassword = strings.TrimRight(string(b), "\r\n")
	}
	if h.SpanCacheMaxBytes < 0 {
		return nil, fmt.Errorf("%w: %s: [hermes] span_cache_max_bytes %d: want 0 (no cap) or more", ErrConfig, name, h.SpanCacheMaxBytes)
	}
	if h.UpstreamDiscovery && !soci.PullModes.SOCIv1.Enable && !soci.PullModes.SOCIv2.Enable {
		return nil, fmt.Errorf("%w: %s: upstream_discovery needs [pull_modes.soci_v1] or [pull_modes.soci_v2] enabled", ErrConfig, name)
	}
	return &Config{Soci: soci, Hermes: h}, nil
}

func isSet(tree map[string]any, path ...string) bool {
	var cur any = tree
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[p]; !ok {
			return false
		}
	}
	return true
}
