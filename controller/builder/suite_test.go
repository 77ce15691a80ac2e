package builder_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/controller/builder/buildertest"
	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/cli"
)

func TestMain(m *testing.M) {
	cli.RouteLibraryLogs(slog.DiscardHandler) // distribution logs every request
	m.Run()
}

// realEnv is the real Builder between two in-process Hermes registries: an
// origin (behind a switch that can make it answer any status) and the
// cache.
type realEnv struct {
	b      *builder.Builder
	origin string // host:port
	status atomic.Int32
}

func newRealEnv(t *testing.T) buildertest.Env {
	t.Helper()
	e := &realEnv{}
	newRegistry := func() *registry.Registry {
		r, err := registry.New(context.Background(), registry.Config{Storage: configuration.Storage{"inmemory": {}}, Auth: registry.AuthConfig{AnonymousWrites: true}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	originReg := newRegistry()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := e.status.Load(); s != 0 {
			http.Error(w, http.StatusText(int(s)), int(s))
			return
		}
		originReg.ServeHTTP(w, r)
	}))
	t.Cleanup(origin.Close)
	cache := httptest.NewServer(newRegistry())
	t.Cleanup(cache.Close)
	e.origin = strings.TrimPrefix(origin.URL, "http://")
	b, err := builder.New(builder.Config{
		CacheHost: strings.TrimPrefix(cache.URL, "http://"), TempDir: t.TempDir(),
		// No retries inside the client: the suite wants each status seen.
		HTTPClient: &http.Client{},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.b = b
	return e
}

func (e *realEnv) Builder() builder.Interface { return e.b }

func (e *realEnv) SetOriginStatus(status int) { e.status.Store(int32(status)) }

func (e *realEnv) AddImage(t *testing.T, repo string, layers int) string {
	t.Helper()
	img, err := random.Image(1<<20, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg.OS, cfg.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	ref := e.origin + "/" + repo + ":v1"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// TestBuilderSuite runs the suite the Fake passes against the real
// builder, in process: the builder's own contract test in the root module.
func TestBuilderSuite(t *testing.T) {
	buildertest.Run(t, newRealEnv)
}
