package build_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/plugins/content/local"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// everyLayer is the default settings with every layer indexed.
func everyLayer() builder.Settings {
	s := builder.DefaultSettings()
	s.MinLayerSize = 0
	return s
}

// unaligned is the default settings without file alignment (zTOCs as soci
// makes them), changed by mod.
func unaligned(mod func(*builder.Settings)) builder.Settings {
	s := builder.DefaultSettings()
	s.AlignFilesFrom = 0
	mod(&s)
	return s
}

// cacheRegistry is the registry indexes are pushed to.
type cacheRegistry struct {
	Host string
	URL  string
	Root string // storage root, for "nothing was pushed" checks
}

// startCache starts the cache registry the builder pushes to:
// hermes-registry, with its Referrers API.
func startCache(t *testing.T) cacheRegistry {
	t.Helper()
	r := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{})
	return cacheRegistry{Host: r.Host, URL: r.URL, Root: r.Root}
}

// requireEmpty fails unless the cache holds no repository and no blob.
func (c cacheRegistry) requireEmpty(t *testing.T) {
	t.Helper()
	resp, err := http.Get(c.URL + "/v2/_catalog")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cat struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&cat); err != nil {
		t.Fatalf("catalog: %v", err)
	}
	if len(cat.Repositories) != 0 {
		t.Errorf("cache has repositories %v; want nothing pushed", cat.Repositories)
	}
	var blobs []string
	_ = filepath.Walk(c.Root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.Contains(p, "/blobs/") {
			blobs = append(blobs, p)
		}
		return nil
	})
	if len(blobs) != 0 {
		t.Errorf("cache stores blobs %v; want nothing pushed", blobs)
	}
}

// push pushes an image or index to ref.
func push(t *testing.T, ref string, x any) digest.Digest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var h v1.Hash
	var err error
	switch x := x.(type) {
	case v1.Image:
		h, err = imagegen.Push(ctx, ref, x)
	case v1.ImageIndex:
		h, err = imagegen.Push(ctx, ref, x)
	default:
		t.Fatalf("push %T", x)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return digest.Digest(h.String())
}

// mustImage builds an imagegen image.
func mustImage(t *testing.T, spec imagegen.Spec) v1.Image {
	t.Helper()
	img, err := imagegen.Image(spec)
	if err != nil {
		t.Fatalf("imagegen: %v", err)
	}
	return img
}

// newBuilder returns a builder pushing to cache with temp files in a fresh
// directory, which it also returns.
func newBuilder(t *testing.T, cache cacheRegistry) (*builder.Builder, string) {
	t.Helper()
	tmp := t.TempDir()
	b, err := builder.New(builder.Config{CacheHost: cache.Host, TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	return b, tmp
}

// requireNoTempFiles fails if dir holds anything.
func requireNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("temp dir %s still holds %v", dir, names)
	}
}

// cacheRepo returns an oras client for a repository of the cache.
func cacheRepo(t *testing.T, cache cacheRegistry, repo string) *remote.Repository {
	t.Helper()
	r, err := remote.NewRepository(cache.Host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	return r
}

// fetchBlob reads a blob from a repository and checks its digest.
func fetchBlob(t *testing.T, r *remote.Repository, desc ocispec.Descriptor) []byte {
	t.Helper()
	rc, err := r.Blobs().Fetch(context.Background(), desc)
	if err != nil {
		t.Fatalf("fetch %s: %v", desc.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(b) != desc.Digest {
		t.Fatalf("blob %s: digest mismatch", desc.Digest)
	}
	return b
}

// fetchIndex reads a SOCI index manifest from the cache and parses it with
// soci's own parser.
func fetchIndex(t *testing.T, r *remote.Repository, desc ocispec.Descriptor) (*soci.Index, []byte) {
	t.Helper()
	rc, err := r.Manifests().Fetch(context.Background(), desc)
	if err != nil {
		t.Fatalf("fetch index %s: %v", desc.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	var idx soci.Index
	if err := soci.UnmarshalIndex(b, &idx); err != nil {
		t.Fatalf("soci.UnmarshalIndex: %v", err)
	}
	return &idx, b
}

// referrers lists the SOCI v1 indexes the cache returns for a manifest.
func referrers(t *testing.T, r *remote.Repository, subject ocispec.Descriptor) []ocispec.Descriptor {
	t.Helper()
	var out []ocispec.Descriptor
	err := r.Referrers(context.Background(), subject, soci.SociIndexArtifactTypeV1, func(refs []ocispec.Descriptor) error {
		out = append(out, refs...)
		return nil
	})
	if err != nil {
		t.Fatalf("referrers of %s: %v", subject.Digest, err)
	}
	return out
}

// tarEntry is what a zTOC must say about a tar entry.
type tarEntry struct {
	Name, Type, Linkname string
	Size                 int64
}

// ztocType is soci's name for a tar type flag.
var ztocType = map[byte]string{
	tar.TypeReg: "reg", tar.TypeLink: "hardlink", tar.TypeSymlink: "symlink", tar.TypeDir: "dir",
	tar.TypeChar: "char", tar.TypeBlock: "block", tar.TypeFifo: "fifo",
}

// tarListing lists an uncompressed layer's entries in order.
func tarListing(t *testing.T, l v1.Layer) []tarEntry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []tarEntry
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		out = append(out, tarEntry{Name: h.Name, Type: ztocType[h.Typeflag], Linkname: h.Linkname, Size: h.Size})
	}
}

// ztocListing lists a zTOC's files in order.
func ztocListing(z *ztoc.Ztoc) []tarEntry {
	var out []tarEntry
	for _, m := range z.FileMetadata {
		out = append(out, tarEntry{Name: m.Name, Type: m.Type, Linkname: m.Linkname, Size: int64(m.UncompressedSize)})
	}
	return out
}

// sociReference builds the index for ref the way upstream soci does: pull
// the image into a containerd local content store, then run soci's
// IndexBuilder on it. It returns the index and the zTOC blobs by layer
// digest.
func sociReference(t *testing.T, ref string, platform ocispec.Platform, s builder.Settings) (*soci.Index, map[digest.Digest][]byte) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	cs, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	name, desc, err := resolver.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("resolve %s: %v", ref, err)
	}
	fetcher, err := resolver.Fetcher(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := images.Dispatch(ctx, images.Handlers(remotes.FetchHandler(cs, fetcher), images.ChildrenHandler(cs)), nil, desc); err != nil {
		t.Fatalf("pull %s into the content store: %v", ref, err)
	}

	blobs, err := store.NewSociStore(filepath.Join(dir, "soci"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := soci.NewDB(soci.ArtifactsDbPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	opts := []soci.BuilderOption{
		soci.WithArtifactsDb(db),
		soci.WithMinLayerSize(s.MinLayerSize),
		soci.WithSpanSize(s.SpanSize),
		soci.WithBuildToolIdentifier(s.BuildToolIdentifier),
	}
	if s.XAttrOptimization {
		opts = append(opts, soci.WithOptimizations([]soci.Optimization{soci.XAttrOptimization}))
	}
	ib, err := soci.NewIndexBuilder(cs, blobs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ib.Build(ctx, images.Image{Name: ref, Target: desc}, soci.WithPlatform(platform))
	if err != nil {
		t.Fatalf("soci IndexBuilder: %v", err)
	}
	ztocs := map[digest.Digest][]byte{}
	for _, b := range res.Index.Blobs {
		rc, err := blobs.Fetch(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		ztocs[digest.Digest(b.Annotations[soci.IndexAnnotationImageLayerDigest])] = data
	}
	return res.Index, ztocs
}

// proxy is a loopback HTTP proxy in front of the origin that can cut or stall
// blob downloads after a number of bytes, to test failures mid-layer.
type proxy struct {
	Host   string
	target string
	// after this many bytes of one blob body the proxy acts: cut drops the
	// connection, stall waits until the client goes away.
	after int64
	cut   bool
	// reached is closed when a blob body first passes after.
	reached   chan struct{}
	reachOnce sync.Once
	blobGets  atomic.Int64
}

func startProxy(t *testing.T, target string, after int64, cut bool) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{Host: l.Addr().String(), target: target, after: after, cut: cut, reached: make(chan struct{})}
	srv := &http.Server{Handler: p}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.target+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	// No redirects followed: the client must see them, as from the origin.
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	isBlob := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && resp.ContentLength > p.after
	if !isBlob {
		io.Copy(w, resp.Body)
		return
	}
	p.blobGets.Add(1)
	if _, err := io.CopyN(w, resp.Body, p.after); err != nil {
		return
	}
	w.(http.Flusher).Flush()
	p.reachOnce.Do(func() { close(p.reached) })
	if !p.cut {
		<-r.Context().Done()
	}
	// Abort the response: the connection closes mid-body.
	panic(http.ErrAbortHandler)
}
