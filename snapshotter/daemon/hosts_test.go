package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/awslabs/soci-snapshotter/config"
	"github.com/awslabs/soci-snapshotter/service/resolver"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/reference"
)

// A private registry answers soci-style requests (sent through the host's
// client alone, never its Authorizer) once the credentials are offered.
func TestRegistryHostsAuthenticateInTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "node" || p != "pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="origin"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Extra", r.Header.Get("X-Extra"))
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, "span")
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, host), 0o755)
	os.WriteFile(filepath.Join(dir, host, "hosts.toml"), []byte(fmt.Sprintf("server = %q\n[header]\n  X-Extra = \"from-hosts-toml\"\n", srv.URL)), 0o644)

	creds := []resolver.Credential{
		func(reference.Spec, string) (string, string, error) { return "", "", nil },
		func(_ reference.Spec, h string) (string, string, error) {
			if h == host {
				return "node", "pw", nil
			}
			return "", "", nil
		},
	}
	var counted int
	wrap := func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) { counted++; return rt.RoundTrip(r) })
	}
	hosts := registryHosts(context.Background(), dir, creds, config.RetryableHTTPClientConfig{}, time.Hour, wrap)
	spec, _ := reference.Parse(host + "/team/app:v1")
	hs, err := hosts(spec)
	if err != nil {
		t.Fatal(err)
	}
	h := hs[len(hs)-1]
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/team/app/blobs/sha256:x", h.Host), nil)
	req.Header.Set("Range", "bytes=0-3")
	scope, _ := docker.RepositoryScope(spec, false)
	req = req.WithContext(docker.WithScope(context.Background(), scope))
	resp, err := h.Client.Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("X-Extra") != "from-hosts-toml" {
		t.Fatalf("status %s, header %q", resp.Status, resp.Header.Get("X-Extra"))
	}
	if counted != 1 {
		t.Errorf("wrap saw %d requests, want 1", counted)
	}
	if again, _ := hosts(spec); &again[0] != &hs[0] {
		t.Errorf("hosts not kept per reference")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
