package snapshotter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/reference"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/hermes-oci/hermes/registry/names"
	"github.com/hermes-oci/hermes/snapshotter"
	"github.com/hermes-oci/hermes/snapshotter/sourcetest"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// testRegistry is go-containerregistry's in-process registry (with the
// Referrers API) that can also serve chosen wrong bytes for a blob, which no
// real registry would accept on push.
type testRegistry struct {
	srv  *httptest.Server
	host string

	mu        sync.Mutex
	overrides map[digest.Digest][]byte
}

func newTestRegistry(t *testing.T) *testRegistry {
	r := &testRegistry{overrides: map[digest.Digest][]byte{}}
	reg := ggcrregistry.New(ggcrregistry.WithReferrersSupport(true), ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if i := strings.LastIndex(req.URL.Path, "/blobs/"); i >= 0 && req.Method == http.MethodGet {
			r.mu.Lock()
			b, ok := r.overrides[digest.Digest(req.URL.Path[i+len("/blobs/"):])]
			r.mu.Unlock()
			if ok {
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Write(b)
				return
			}
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// corrupt makes the registry serve blob d with its first byte changed.
func (r *testRegistry) corrupt(t *testing.T, repo string, d digest.Digest) {
	t.Helper()
	resp, err := http.Get(r.srv.URL + "/v2/" + repo + "/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("blob %s: %s %v", d, resp.Status, err)
	}
	b[0] ^= 0xff
	r.mu.Lock()
	r.overrides[d] = b
	r.mu.Unlock()
}

// push stores a in repository repo (no host).
func (r *testRegistry) push(t *testing.T, repo string, a sourcetest.Artifact) {
	t.Helper()
	ctx := context.Background()
	rp, err := remote.NewRepository(r.host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	rp.PlainHTTP = true
	pushBlob := func(d ocispec.Descriptor, b []byte) {
		if err := rp.Blobs().Push(ctx, d, bytes.NewReader(b)); err != nil {
			t.Fatalf("push blob %s: %v", d.Digest, err)
		}
	}
	empty := []byte("{}")
	pushBlob(ocispec.Descriptor{Digest: digest.FromBytes(empty), Size: 2}, empty)
	var idx soci.Index
	if err := soci.UnmarshalIndex(a.Index, &idx); err != nil {
		t.Fatal(err)
	}
	for _, d := range idx.Blobs {
		pushBlob(d, a.Blobs[d.Digest])
	}
	if err := rp.Manifests().Push(ctx, a.IndexDesc, bytes.NewReader(a.Index)); err != nil {
		t.Fatalf("push index: %v", err)
	}
}

func newSociStore(t *testing.T) store.Store {
	st, err := store.NewSociStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestMemorySourceConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T) sourcetest.Target {
		st := newSociStore(t)
		m := sourcetest.NewMemory(snapshotter.SourceCache, st)
		return sourcetest.Target{
			Source: m, Store: st,
			Ref: func(name string) string { return "registry.example.com/team/" + name + ":v1" },
			Publish: func(t *testing.T, ref string, a sourcetest.Artifact) {
				if err := m.Publish(ref, a); err != nil {
					t.Fatal(err)
				}
			},
			Corrupt: func(t *testing.T, _ string, d digest.Digest) { m.Corrupt(d) },
		}
	})
}

func TestCacheRegistrySourceConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T) sourcetest.Target {
		reg := newTestRegistry(t)
		st := newSociStore(t)
		src, err := snapshotter.NewCacheRegistry(snapshotter.CacheRegistryOptions{URL: reg.srv.URL, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		return sourcetest.Target{
			Source: src, Store: st,
			Ref:     func(name string) string { return "registry.example.com:5000/team/" + name + ":v1" },
			Publish: func(t *testing.T, ref string, a sourcetest.Artifact) { reg.push(t, cacheRepo(t, ref), a) },
			Corrupt: func(t *testing.T, ref string, d digest.Digest) { reg.corrupt(t, cacheRepo(t, ref), d) },
		}
	})
}

func cacheRepo(t *testing.T, ref string) string {
	named, err := names.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	return names.Repository(named)
}

func originRepo(reg *testRegistry, ref string) string {
	return strings.TrimPrefix(strings.TrimSuffix(ref, ":v1"), reg.host+"/")
}

// originHosts resolves every image to the test registry over plain HTTP.
func originHosts(host string) func(reference.Spec) ([]docker.RegistryHost, error) {
	return func(reference.Spec) ([]docker.RegistryHost, error) {
		return []docker.RegistryHost{{Client: http.DefaultClient, Host: host, Scheme: "http", Path: "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve}}, nil
	}
}

func TestUpstreamSourceConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T) sourcetest.Target {
		reg := newTestRegistry(t)
		st := newSociStore(t)
		src, err := snapshotter.NewUpstream(snapshotter.UpstreamOptions{Hosts: originHosts(reg.host), V1: true, V2: true, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		return sourcetest.Target{
			Source: src, Store: st,
			Ref:     func(name string) string { return reg.host + "/team/" + name + ":v1" },
			Publish: func(t *testing.T, ref string, a sourcetest.Artifact) { reg.push(t, originRepo(reg, ref), a) },
			Corrupt: func(t *testing.T, ref string, d digest.Digest) { reg.corrupt(t, originRepo(reg, ref), d) },
		}
	})
}

// The v2 path: the index digest is an annotation on the image manifest, and
// the index has no subject.
func TestUpstreamSOCIv2Annotation(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t)
	st := newSociStore(t)
	a := sourcetest.NewArtifact(t, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("unused"), Size: 1}, 2)
	reg.push(t, "team/v2", a)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config:      ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes([]byte("{}")), Size: 2},
		Annotations: map[string]string{soci.ImageAnnotationSociIndexDigest: a.IndexDesc.Digest.String()}}
	m.SchemaVersion = 2
	mb, _ := json.Marshal(m)
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	rp, _ := remote.NewRepository(reg.host + "/team/v2")
	rp.PlainHTTP = true
	if err := rp.Manifests().Push(ctx, md, bytes.NewReader(mb)); err != nil {
		t.Fatal(err)
	}
	img := snapshotter.Image{Ref: reg.host + "/team/v2:v1", Manifest: md.Digest}

	only1, _ := snapshotter.NewUpstream(snapshotter.UpstreamOptions{Hosts: originHosts(reg.host), V1: true, Store: st})
	if _, err := only1.Fetch(ctx, img); !errors.Is(err, snapshotter.ErrNoIndex) {
		t.Fatalf("with soci_v2 off: got %v, want ErrNoIndex", err)
	}
	src, _ := snapshotter.NewUpstream(snapshotter.UpstreamOptions{Hosts: originHosts(reg.host), V2: true, Store: st})
	got, err := src.Fetch(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != a.IndexDesc.Digest {
		t.Fatalf("index %s, want %s", got.Digest, a.IndexDesc.Digest)
	}
}

func TestCacheRegistryRefusedFailsAtOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	// A timeout far beyond the test's own proves the refusal did not wait.
	src, err := snapshotter.NewCacheRegistry(snapshotter.CacheRegistryOptions{URL: url, Timeout: time.Hour, Store: newSociStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Fetch(context.Background(), snapshotter.Image{Ref: "nginx:1.27", Manifest: digest.FromString("m")})
	if err == nil || errors.Is(err, snapshotter.ErrNoIndex) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("got %v, want a connection refused failure", err)
	}
}

func TestCacheRegistryHangingGivesUp(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	src, err := snapshotter.NewCacheRegistry(snapshotter.CacheRegistryOptions{URL: srv.URL, Timeout: 200 * time.Millisecond, Store: newSociStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Fetch(context.Background(), snapshotter.Image{Ref: "nginx:1.27", Manifest: digest.FromString("m")})
	if err == nil || errors.Is(err, snapshotter.ErrNoIndex) || !strings.Contains(err.Error(), "within 200ms") {
		t.Fatalf("got %v, want a timeout failure naming the timeout", err)
	}
}

func TestCacheRegistryBadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:5000", "ftp://x", "http://host/path"} {
		if _, err := snapshotter.NewCacheRegistry(snapshotter.CacheRegistryOptions{URL: u, Store: newSociStore(t)}); !errors.Is(err, snapshotter.ErrConfig) {
			t.Errorf("URL %q: got %v, want ErrConfig", u, err)
		}
	}
}
