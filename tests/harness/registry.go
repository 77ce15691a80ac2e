package harness

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a running distribution registry (`registry serve`), the
// "origin" that images live in during tests.
type Registry struct {
	*Process
	Host string // 127.0.0.1:PORT, as used in image references
	URL  string // http://127.0.0.1:PORT
	Root string // storage root directory
}

// RegistryOptions configures StartRegistry.
type RegistryOptions struct {
	// Htpasswd, when set, is the path of an htpasswd file that every request
	// must authenticate against (a private origin).
	Htpasswd string
	// Port to listen on; 0 picks a free one. Set it to restart a registry at
	// the same address.
	Port int
	// Root is the storage directory; empty makes a temporary one.
	Root string
}

// StartRegistry starts distribution's registry on a free port with
// filesystem storage and its access log in the process log.
func StartRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	bin := Bin(t, "registry")
	dir := TempDir(t, "origin")
	root := opts.Root
	if root == "" {
		root = filepath.Join(dir, "storage")
	}
	port := opts.Port
	if port == 0 {
		port = FreePort(t)
	}
	auth := ""
	if opts.Htpasswd != "" {
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: origin\n    path: %s\n", opts.Htpasswd)
	}
	conf := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
%s`, root, port, auth)
	confPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := Start(t, "origin-registry", dir, bin, []string{"serve", confPath}, "OTEL_TRACES_EXPORTER=none")
	r := &Registry{Process: p, Host: fmt.Sprintf("127.0.0.1:%d", port), URL: fmt.Sprintf("http://127.0.0.1:%d", port), Root: root}
	WaitFor(t, p, 15*time.Second, "origin registry", HTTPReady(r.URL+"/v2/"))
	return r
}

// HtpasswdFile writes an htpasswd file for user:password, for
// RegistryOptions.Htpasswd.
func HtpasswdFile(t testing.TB, user, password string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(TempDir(t, "htpasswd"), "htpasswd")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("%s:%s\n", user, hash)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// DockerConfigDir writes a docker config.json with a login for host and
// returns its directory, for DOCKER_CONFIG.
func DockerConfigDir(t testing.TB, host, user, password string) string {
	t.Helper()
	dir := TempDir(t, "docker-config")
	cfg := map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
	}}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}
