package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// HermesRegistryOptions configures StartHermesRegistry.
type HermesRegistryOptions struct {
	// Auth makes writes need a credential: the htpasswd user
	// (Username/Password) or the bearer token (Token, also accepted as a
	// Basic password with any user name). Reads stay anonymous.
	//
	// Without Auth (and RequireReadAuth) the registry is started with
	// --allow-anonymous-writes: hermes-registry refuses to start with no
	// write credential, so a test that wants anyone to write opts out of
	// auth explicitly, by leaving Auth false.
	Auth bool
	// RequireReadAuth makes reads need the credential too; implies Auth.
	RequireReadAuth bool
	// Port and OpsPort to listen on; 0 picks free ones.
	Port, OpsPort int
	// Root is the filesystem storage directory; empty makes a temporary one.
	Root string
	// StorageConfig is a distribution configuration file whose storage
	// section replaces the filesystem storage (e.g. s3 on versitygw).
	StorageConfig string
	// ReferrersCacheTTL is passed as --referrers-cache-ttl when positive.
	// Zero leaves hermes-registry's default, a few seconds, right for
	// replicas over shared storage; negative passes 0 (sets kept until
	// changed through that process: a single replica only).
	ReferrersCacheTTL time.Duration
	// HTTPSecret is passed as -http-secret when set (replicas).
	HTTPSecret string
	// TLS serves the API over HTTPS with a certificate for 127.0.0.1 from a
	// throwaway CA (HermesRegistry.CACert); the ops port stays HTTP.
	TLS bool
	// LogLevel defaults to "info" (writes and errors are logged; "debug"
	// logs every request).
	LogLevel string
	// Args and Env are extra flags and environment for the process.
	Args []string
	Env  []string
}

// HermesRegistry is a running hermes-registry, the Hermes cache registry.
type HermesRegistry struct {
	*Process
	Host       string // 127.0.0.1:PORT, as used in image references
	URL        string // http://127.0.0.1:PORT, https:// with TLS
	CACert     string // with TLS: the CA certificate (PEM) that signed the server's
	OpsURL     string // http://127.0.0.1:OPSPORT (/metrics, /healthz, /readyz)
	MetricsURL string // OpsURL + "/metrics"
	Root       string // filesystem storage directory (unused with StorageConfig)
	Dir        string // working directory: log, credential files

	// Credentials for writes, set when Auth or RequireReadAuth.
	Username, Password string
	Token              string
	HtpasswdFile       string
	TokenFile          string

	bin  string
	args []string
	env  []string
}

// StartHermesRegistry builds hermes-registry from the working tree, starts
// it on 127.0.0.1 with filesystem storage (or opts.StorageConfig), and
// waits until it answers. It is stopped by PID when the test ends; its log
// is dumped if the test failed.
func StartHermesRegistry(t testing.TB, opts HermesRegistryOptions) *HermesRegistry {
	t.Helper()
	bin := HermesBin(t, "hermes-registry")
	dir := TempDir(t, "hreg")
	r := &HermesRegistry{Dir: dir, Root: opts.Root, bin: bin}
	if r.Root == "" {
		r.Root = filepath.Join(dir, "storage")
	}
	port, opsPort := opts.Port, opts.OpsPort
	if port == 0 {
		port = FreePort(t)
	}
	if opsPort == 0 {
		opsPort = FreePort(t)
	}
	r.Host = fmt.Sprintf("127.0.0.1:%d", port)
	r.URL = "http://" + r.Host
	r.OpsURL = fmt.Sprintf("http://127.0.0.1:%d", opsPort)
	r.MetricsURL = r.OpsURL + "/metrics"
	level := opts.LogLevel
	if level == "" {
		level = "info"
	}
	r.args = []string{"--addr", r.Host, "--ops-addr", fmt.Sprintf("127.0.0.1:%d", opsPort), "--log-level", level, "--log-format", "text"}
	if opts.StorageConfig != "" {
		r.args = append(r.args, "--storage-config", opts.StorageConfig)
	} else {
		r.args = append(r.args, "--root", r.Root)
	}
	if opts.Auth || opts.RequireReadAuth {
		r.Username, r.Password, r.Token = "hermes", hregRandomHex(t, 12), hregRandomHex(t, 24)
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		r.HtpasswdFile, r.TokenFile = filepath.Join(dir, "htpasswd"), filepath.Join(dir, "token")
		hregWriteFile(t, r.HtpasswdFile, fmt.Sprintf("%s:%s\n", r.Username, hash))
		hregWriteFile(t, r.TokenFile, r.Token+"\n")
		r.args = append(r.args, "--htpasswd", r.HtpasswdFile, "--token-file", r.TokenFile)
	} else {
		r.args = append(r.args, "--allow-anonymous-writes")
	}
	if opts.RequireReadAuth {
		r.args = append(r.args, "--auth-reads")
	}
	switch {
	case opts.ReferrersCacheTTL > 0:
		r.args = append(r.args, "--referrers-cache-ttl", opts.ReferrersCacheTTL.String())
	case opts.ReferrersCacheTTL < 0:
		r.args = append(r.args, "--referrers-cache-ttl", "0")
	}
	if opts.HTTPSecret != "" {
		r.args = append(r.args, "--http-secret", opts.HTTPSecret)
	}
	if opts.TLS {
		pki, err := NewPKI(filepath.Join(dir, "pki"))
		if err != nil {
			t.Fatal(err)
		}
		cert, key, err := pki.Issue("hermes-registry", "hermes-registry", nil, "127.0.0.1", "localhost")
		if err != nil {
			t.Fatal(err)
		}
		r.CACert, r.URL = pki.CACert, "https://"+r.Host
		r.args = append(r.args, "--tls-cert", cert, "--tls-key", key)
	}
	r.args = append(r.args, opts.Args...)
	r.env = opts.Env
	r.start(t)
	return r
}

func (r *HermesRegistry) start(t testing.TB) {
	t.Helper()
	r.Process = StartServer(t, "hermes-registry", r.Dir, r.bin, r.args, r.env, r.OpsURL+"/readyz", r.Host, 20*time.Second)
}

// Restart stops the registry (SIGTERM, or SIGKILL when crash is set) and
// starts it again with the same address, storage and credentials.
func (r *HermesRegistry) Restart(t testing.TB, crash bool) {
	t.Helper()
	r.End(crash, 10*time.Second)
	r.start(t)
}

// Metrics returns the registry's Prometheus exposition text.
func (r *HermesRegistry) Metrics(t testing.TB) string {
	t.Helper()
	return Scrape(t, r.MetricsURL)
}

// SetBasicAuth adds the registry's write credential to req (no-op without
// auth).
func (r *HermesRegistry) SetBasicAuth(req *http.Request) {
	if r.Username != "" {
		req.SetBasicAuth(r.Username, r.Password)
	}
}

func hregRandomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func hregWriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
