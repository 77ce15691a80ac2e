package registry_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/registry"
)

// TestServer runs a Server as hermes-registry and hermes-controller do:
// NewServer, Listen on a port the system picks, Start until the context
// ends. A push and a pull work; cancelling stops it cleanly and promptly;
// an address that cannot be bound fails at Listen with a clear error.
func TestServer(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(conf, []byte("version: 0.1\nstorage:\n  inmemory: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	settings := registry.Settings{Addr: "127.0.0.1:0", StorageConfig: conf, AllowAnonymousWrites: true}
	srv, err := registry.NewServer(context.Background(), settings, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := addr.(*net.TCPAddr); !ok || a.Port == 0 || !a.IP.IsLoopback() {
		t.Fatalf("Listen = %v, want a picked port on 127.0.0.1", addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()

	// The helpers need only the URL.
	s := &server{Server: &httptest.Server{URL: "http://" + addr.String()}}
	const repo = "docker.io/library/app"
	body := s.artifact(t, repo, "", "application/vnd.hermes.test", "served")
	if resp := s.putManifest(t, repo, "v1", body); resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %s %s", resp.Status, readAll(t, resp))
	}
	resp := s.do(t, http.MethodGet, "/v2/"+repo+"/manifests/v1", nil, "Accept", ocispec.MediaTypeImageManifest)
	if b := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(b, body) {
		t.Fatalf("pull manifest: %s %s", resp.Status, b)
	}
	resp = s.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+digest.FromBytes(emptyJSON).String(), nil)
	if b := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(b, emptyJSON) {
		t.Fatalf("pull blob: %s %s", resp.Status, b)
	}
	if srv.Registry() == nil || srv.NeedLeaderElection() {
		t.Fatal("a Server serves its Registry on every replica")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return within 5s of the context ending")
	}
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Start returned", addr)
	}

	settings.Addr = "256.0.0.1:1"
	bad, err := registry.NewServer(context.Background(), settings, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Registry().Close()
	if _, err := bad.Listen(); err == nil || !strings.Contains(err.Error(), "registry API") || !strings.Contains(err.Error(), "256.0.0.1") {
		t.Fatalf("Listen on %s = %v, want an error naming the registry API and the address", settings.Addr, err)
	}
}
