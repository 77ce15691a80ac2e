package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join(t.TempDir(), "absent.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Hermes
	if h.SpanCacheMaxBytes != 10<<30 || h.DiskCheckInterval.D() != time.Minute {
		t.Errorf("disk defaults: cap %d, interval %s", h.SpanCacheMaxBytes, h.DiskCheckInterval.D())
	}
	if h.CacheURL != "" || h.Timeout.D() != 2*time.Second || h.NegativeTTL.D() != 30*time.Second || h.UpstreamDiscovery || !h.DockerConfig || h.HostsDir != "/etc/containerd/certs.d" {
		t.Errorf("hermes defaults: %+v", h)
	}
	s := cfg.Soci
	if !s.PullModes.SOCIv1.Enable || !s.BackgroundFetchConfig.Disable || !s.SnapshotterConfig.AllowInvalidMountsOnRestart {
		t.Errorf("Hermes defaults for soci not applied: v1=%v bgDisable=%v allowInvalid=%v",
			s.PullModes.SOCIv1.Enable, s.BackgroundFetchConfig.Disable, s.SnapshotterConfig.AllowInvalidMountsOnRestart)
	}
	// soci's own parser defaults, which a hand-built config would miss.
	if s.MountTimeoutSec == 0 || s.ContentStoreConfig.Type != "soci" {
		t.Errorf("soci defaults missing: mount timeout %d, store %q", s.MountTimeoutSec, s.ContentStoreConfig.Type)
	}
}

func TestLoadConfigFile(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	p := writeConfig(t, `
[hermes]
cache_url = "http://127.0.0.1:5001"
timeout = "500ms"
negative_ttl = "5s"
cache_username = "node"
cache_password_file = "`+pw+`"
upstream_discovery = true
hosts_dir = "/tmp/certs.d"

[pull_modes.soci_v1]
enable = false

[background_fetch]
disable = false

[content_store]
type = "containerd"
containerd_address = "unix:///run/x/containerd.sock"
`)
	cfg, err := LoadConfig(p, true)
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Hermes
	if h.CacheURL != "http://127.0.0.1:5001" || h.Timeout.D() != 500*time.Millisecond || h.NegativeTTL.D() != 5*time.Second ||
		h.CachePassword != "s3cret" || h.CacheUsername != "node" || !h.UpstreamDiscovery || h.HostsDir != "/tmp/certs.d" {
		t.Errorf("hermes: %+v", h)
	}
	s := cfg.Soci
	if s.PullModes.SOCIv1.Enable || s.BackgroundFetchConfig.Disable {
		t.Errorf("explicit soci settings overridden: v1=%v bgDisable=%v", s.PullModes.SOCIv1.Enable, s.BackgroundFetchConfig.Disable)
	}
	if s.ContentStoreConfig.Type != "containerd" || s.ContentStoreConfig.ContainerdAddress != "/run/x/containerd.sock" {
		t.Errorf("content store: %+v", s.ContentStoreConfig)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for name, body := range map[string]string{
		"unknown hermes key":  "[hermes]\ncache_ulr = \"x\"\n",
		"bad duration":        "[hermes]\ntimeout = \"two seconds\"\n",
		"negative span cap":   "[hermes]\nspan_cache_max_bytes = -1\n",
		"not toml":            "[hermes\n",
		"kubeconfig keychain": "[kubeconfig_keychain]\nenable_keychain = true\n",
		"both passwords":      "[hermes]\ncache_password = \"a\"\ncache_password_file = \"/x\"\n",
		"upstream, no modes":  "[hermes]\nupstream_discovery = true\n[pull_modes.soci_v1]\nenable = false\n[pull_modes.soci_v2]\nenable = false\n",
		"soci's own checks":   "[background_fetch]\ndrop_policy = \"sideways\"\n",
	} {
		_, err := LoadConfig(writeConfig(t, body), true)
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%s: got %v, want ErrConfig", name, err)
		}
	}
	_, err := LoadConfig(filepath.Join(t.TempDir(), "absent.toml"), true)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "absent.toml") {
		t.Errorf("missing required file: %v", err)
	}
}

// The shipped example documents the defaults: loading it must give the
// same configuration as loading nothing.
func TestExampleConfigShowsDefaults(t *testing.T) {
	ex, err := LoadConfig("../../manifests/node/config.toml", true)
	if err != nil {
		t.Fatal(err)
	}
	def, err := LoadConfig(filepath.Join(t.TempDir(), "absent.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Hermes != def.Hermes {
		t.Errorf("example [hermes]\n%+v\ndefaults\n%+v", ex.Hermes, def.Hermes)
	}
	if !reflect.DeepEqual(ex.Soci.PullModes, def.Soci.PullModes) || ex.Soci.BackgroundFetchConfig != def.Soci.BackgroundFetchConfig ||
		ex.Soci.SnapshotterConfig != def.Soci.SnapshotterConfig || ex.Soci.ContentStoreConfig != def.Soci.ContentStoreConfig ||
		ex.Soci.CRIKeychainConfig != def.Soci.CRIKeychainConfig {
		t.Errorf("example soci sections differ from the defaults")
	}
}
