package build_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/registry/names"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// smallImage is a quick image with one layer of each kind the builder
// handles: gzip random, gzip compressible, plain tar.
func smallImage() imagegen.Spec {
	return imagegen.Spec{Layers: []imagegen.Layer{
		{Kind: imagegen.Busybox},
		{Kind: imagegen.Random, Size: 12 << 20, Files: 3, Seed: 1},
		{Kind: imagegen.Compressible, Size: 24 << 20, Files: 600, Seed: 2},
		{Kind: imagegen.Compressible, Size: 6 << 20, Files: 100, Seed: 3, Uncompressed: true},
	}}
}

// layerSizes returns the compressed sizes of img's layers, bottom first.
func layers(t *testing.T, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// TestBuild builds the edge-case image and a small mixed image and checks
// the artifact in the cache: one zTOC per layer at or above the min size,
// each listing exactly its layer's tar entries; an index soci parses, with
// the image manifest as subject, found through the cache's referrers; and a
// second build that finds it and does nothing.
func TestBuild(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	cache := startCache(t)
	for name, spec := range map[string]imagegen.Spec{"edge": imagegen.EdgeCase(), "mixed": smallImage()} {
		t.Run(name, func(t *testing.T) {
			img := mustImage(t, spec)
			ref := origin.Host + "/test/" + name + ":v1"
			manifestDigest := push(t, ref, img)
			ls := layers(t, img)

			// A min size between the layer sizes, so both outcomes occur.
			sizes := make([]int64, len(ls))
			for i, l := range ls {
				if sizes[i], _ = l.Size(); sizes[i] <= 0 {
					t.Fatalf("layer %d size %d", i, sizes[i])
				}
			}
			smallest := 0
			for i, s := range sizes {
				if s < sizes[smallest] {
					smallest = i
				}
			}
			minSize := sizes[smallest] + 1 // the smallest layer is skipped
			settings := builder.DefaultSettings().WithSpanSize(1 << 20)
			settings.MinLayerSize = minSize

			b, tmp := newBuilder(t, cache)
			var events []builder.Progress
			res, err := b.Build(context.Background(), builder.Request{
				Image: ref, Settings: settings,
				Progress: func(p builder.Progress) { events = append(events, p) },
			})
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			requireNoTempFiles(t, tmp)

			named, _ := names.ParseReference(ref)
			wantRepo := cache.Host + "/" + names.Repository(named)
			if res.CacheRepository != wantRepo || res.Digest != manifestDigest || len(res.Platforms) != 1 {
				t.Fatalf("result %+v; want repo %s, digest %s, one platform", res, wantRepo, manifestDigest)
			}
			pr := res.Platforms[0]
			if pr.Manifest.Digest != manifestDigest || pr.Index == nil || pr.Existed {
				t.Fatalf("platform result %+v", pr)
			}

			repo := cacheRepo(t, cache, names.Repository(named))
			refs := referrers(t, repo, pr.Manifest)
			if len(refs) != 1 || refs[0].Digest != pr.Index.Digest || refs[0].ArtifactType != soci.SociIndexArtifactTypeV1 {
				t.Fatalf("referrers of %s: %+v; want the index %s", manifestDigest, refs, pr.Index.Digest)
			}
			idx, _ := fetchIndex(t, repo, *pr.Index)
			if idx.ArtifactType != soci.SociIndexArtifactTypeV1 || idx.Subject == nil || idx.Subject.Digest != manifestDigest {
				t.Fatalf("index: artifactType %s, subject %+v", idx.ArtifactType, idx.Subject)
			}

			var want []int
			for i, s := range sizes {
				if s >= minSize {
					want = append(want, i)
				}
			}
			if len(idx.Blobs) != len(want) || len(want) == 0 || len(want) == len(ls) {
				t.Fatalf("index has %d zTOCs; want %d (layers %v of %d, sizes %v, min %d)", len(idx.Blobs), len(want), want, len(ls), sizes, minSize)
			}
			for j, i := range want {
				blob := idx.Blobs[j]
				layerDigest, _ := ls[i].Digest()
				mt, _ := ls[i].MediaType()
				if blob.Annotations[soci.IndexAnnotationImageLayerDigest] != layerDigest.String() ||
					blob.Annotations[soci.IndexAnnotationImageLayerMediaType] != string(mt) ||
					blob.Annotations[soci.IndexAnnotationSociSpanSize] != strconv.Itoa(1<<20) ||
					blob.MediaType != soci.SociLayerMediaType {
					t.Errorf("zTOC %d descriptor %+v; want layer %s (%s)", j, blob, layerDigest, mt)
				}
				z, err := ztoc.Unmarshal(bytes.NewReader(fetchBlob(t, repo, blob)))
				if err != nil {
					t.Fatalf("zTOC of layer %d: ztoc.Unmarshal: %v", i, err)
				}
				got, wantList := ztocListing(z), tarListing(t, ls[i])
				if fmt.Sprint(got) != fmt.Sprint(wantList) {
					t.Errorf("layer %d: zTOC lists %d entries, tar has %d;\n zTOC %v\n tar  %v", i, len(got), len(wantList), got, wantList)
				}
				if pr.Layers[i].State != builder.LayerBuilt || pr.Layers[i].Ztoc == nil || pr.Layers[i].Ztoc.Digest != blob.Digest {
					t.Errorf("layer %d result %+v", i, pr.Layers[i])
				}
			}
			if l := pr.Layers[smallest]; l.State != builder.LayerSkipped || !strings.Contains(l.Reason, "min-layer-size") {
				t.Errorf("layer %d result %+v; want skipped for its size", smallest, l)
			}
			final := map[int]builder.LayerState{}
			for _, e := range events {
				final[e.Layer] = e.State
			}
			for i := range ls {
				if final[i] != pr.Layers[i].State {
					t.Errorf("layer %d: last progress event %s, result %s", i, final[i], pr.Layers[i].State)
				}
			}

			// Again: found, nothing built.
			again, err := b.Build(context.Background(), builder.Request{Image: origin.Host + "/test/" + name + "@" + string(manifestDigest), Settings: settings})
			if err != nil {
				t.Fatalf("second build: %v", err)
			}
			if p := again.Platforms[0]; !p.Existed || p.Index.Digest != pr.Index.Digest {
				t.Fatalf("second build: %+v; want the existing index %s", p, pr.Index.Digest)
			}
			if refs := referrers(t, repo, pr.Manifest); len(refs) != 1 {
				t.Fatalf("after the second build: %d referrers", len(refs))
			}

			// Other settings make another index for the same manifest.
			other := settings
			other.SpanSize = 2 << 20
			third, err := b.Build(context.Background(), builder.Request{Image: ref, Settings: other})
			if err != nil {
				t.Fatalf("third build: %v", err)
			}
			if p := third.Platforms[0]; p.Existed || p.Index == nil || p.Index.Digest == pr.Index.Digest {
				t.Fatalf("build with another span size: %+v", p)
			}

			// Upstream's CLI sees it too. oras discover resolves the subject
			// in the repository it asks, so the image is copied there first.
			harness.Run(t, 2*time.Minute, harness.Bin(t, "crane"), "copy", "--insecure", ref, wantRepo+":v1")
			out := harness.Run(t, time.Minute, harness.Bin(t, "oras"), "discover", "--plain-http", "--format", "json",
				"--artifact-type", soci.SociIndexArtifactTypeV1, wantRepo+"@"+string(manifestDigest))
			if !strings.Contains(out, string(pr.Index.Digest)) {
				t.Errorf("oras discover does not list %s:\n%s", pr.Index.Digest, out)
			}
		})
	}
}

// TestFormatIdentity builds the same images with soci's own IndexBuilder
// (from a containerd content store, as `soci create` does) and requires
// byte-identical zTOCs and the same index entries, for both of the
// builder's engines: one-pass streaming (the default) and staged files.
// File alignment, which soci does not do, is off.
func TestFormatIdentity(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	edge := imagegen.EdgeCase()
	mixed := smallImage()
	for _, tc := range []struct {
		name     string
		spec     imagegen.Spec
		settings builder.Settings
	}{
		{"edge-all-layers", edge, unaligned(func(s *builder.Settings) { s.MinLayerSize, s.SpanSize, s.XAttrOptimization = 1, 1<<20, true })},
		{"mixed-defaults", mixed, unaligned(func(*builder.Settings) {})},
		{"mixed-small-spans", mixed, unaligned(func(s *builder.Settings) {
			s.MinLayerSize, s.SpanSize, s.BuildToolIdentifier = 1, 64<<10, "AWS SOCI CLI v0.2"
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := mustImage(t, tc.spec)
			ref := origin.Host + "/identity/" + tc.name + ":v1"
			push(t, ref, img)
			theirs, theirZtocs := sociReference(t, ref, builder.DefaultPlatform, tc.settings)
			for _, stage := range []bool{false, true} {
				t.Run(fmt.Sprintf("staged=%v", stage), func(t *testing.T) {
					requireSameAsSoci(t, ref, tc.settings, stage, theirs, theirZtocs)
				})
			}
		})
	}
}

// requireSameAsSoci builds ref into a fresh cache and compares the index and
// the zTOCs with soci's.
func requireSameAsSoci(t *testing.T, ref string, settings builder.Settings, stage bool, theirs *soci.Index, theirZtocs map[digest.Digest][]byte) {
	t.Helper()
	cache := startCache(t)
	b, err := builder.New(builder.Config{CacheHost: cache.Host, TempDir: t.TempDir(), StageLayers: stage})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Build(context.Background(), builder.Request{Image: ref, Settings: settings})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	pr := res.Platforms[0]
	named, _ := names.ParseReference(ref)
	repo := cacheRepo(t, cache, names.Repository(named))
	ours, _ := fetchIndex(t, repo, *pr.Index)
	if len(ours.Blobs) != len(theirs.Blobs) {
		t.Fatalf("%d zTOCs, soci made %d", len(ours.Blobs), len(theirs.Blobs))
	}
	for i := range ours.Blobs {
		o, th := ours.Blobs[i], theirs.Blobs[i]
		oj, _ := json.Marshal(o)
		tj, _ := json.Marshal(th)
		if string(oj) != string(tj) {
			t.Errorf("index entry %d:\n ours %s\n soci %s", i, oj, tj)
		}
		layer := digest.Digest(o.Annotations[soci.IndexAnnotationImageLayerDigest])
		if got := fetchBlob(t, repo, o); !bytes.Equal(got, theirZtocs[layer]) {
			t.Errorf("zTOC of layer %s: %d bytes (%s), soci's %d bytes (%s)", layer, len(got), o.Digest, len(theirZtocs[layer]), digest.FromBytes(theirZtocs[layer]))
		}
	}
	if ours.Subject.Digest != theirs.Subject.Digest || ours.Subject.Size != theirs.Subject.Size || ours.Subject.MediaType != theirs.Subject.MediaType {
		t.Errorf("subject %+v, soci's %+v", ours.Subject, theirs.Subject)
	}
	if ours.Annotations[soci.IndexAnnotationBuildToolIdentifier] != theirs.Annotations[soci.IndexAnnotationBuildToolIdentifier] {
		t.Errorf("annotations %v, soci's %v", ours.Annotations, theirs.Annotations)
	}
}

// TestMultiPlatform indexes a two-platform image: one index per selected
// platform manifest, each with that manifest as subject.
func TestMultiPlatform(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	cache := startCache(t)
	specs := map[string]imagegen.Spec{}
	for i, p := range []string{"linux/amd64", "linux/arm64"} {
		specs[p] = imagegen.Spec{Platform: p, Layers: []imagegen.Layer{
			{Kind: imagegen.Random, Size: 3 << 20, Files: 2, Seed: int64(10 + i)},
			{Kind: imagegen.Compressible, Size: 2 << 20, Files: 50, Seed: 20}, // shared by both
		}}
	}
	idx, err := imagegen.Index(specs)
	if err != nil {
		t.Fatalf("imagegen: %v", err)
	}
	ref := origin.Host + "/test/multi:v1"
	indexDigest := push(t, ref, idx)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	manifests := map[string]v1.Descriptor{}
	for _, m := range im.Manifests {
		manifests[m.Platform.OS+"/"+m.Platform.Architecture] = m
	}
	named, _ := names.ParseReference(ref)
	repo := cacheRepo(t, cache, names.Repository(named))
	b, tmp := newBuilder(t, cache)
	settings := everyLayer()

	// Default: linux/amd64 only.
	res, err := b.Build(context.Background(), builder.Request{Image: ref, Settings: settings})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	if res.Digest != indexDigest || len(res.Platforms) != 1 || platforms.Format(res.Platforms[0].Platform) != "linux/amd64" {
		t.Fatalf("default platform: %+v", res)
	}
	if arm := manifests["linux/arm64"]; len(referrers(t, repo, ocispec.Descriptor{MediaType: string(arm.MediaType), Digest: digest.Digest(arm.Digest.String()), Size: arm.Size})) != 0 {
		t.Fatal("linux/arm64 indexed without being asked for")
	}

	res, err = b.Build(context.Background(), builder.Request{Image: ref, AllPlatforms: true, Settings: settings})
	if err != nil {
		t.Fatalf("build all: %v", err)
	}
	if len(res.Platforms) != 2 {
		t.Fatalf("all platforms: %d results", len(res.Platforms))
	}
	for _, pr := range res.Platforms {
		p := platforms.Format(pr.Platform)
		m := manifests[p]
		if pr.Manifest.Digest.String() != m.Digest.String() || pr.Index == nil {
			t.Fatalf("%s: manifest %s index %v; want manifest %s", p, pr.Manifest.Digest, pr.Index, m.Digest)
		}
		if pr.Existed != (p == "linux/amd64") {
			t.Errorf("%s: existed=%v", p, pr.Existed)
		}
		refs := referrers(t, repo, pr.Manifest)
		if len(refs) != 1 || refs[0].Digest != pr.Index.Digest {
			t.Fatalf("%s: referrers %+v", p, refs)
		}
		sidx, _ := fetchIndex(t, repo, *pr.Index)
		if sidx.Subject.Digest != pr.Manifest.Digest {
			t.Errorf("%s: subject %s, want %s", p, sidx.Subject.Digest, pr.Manifest.Digest)
		}
	}
	requireNoTempFiles(t, tmp)

	_, err = b.Build(context.Background(), builder.Request{Image: ref, Platforms: []ocispec.Platform{{OS: "linux", Architecture: "s390x"}}, Settings: everyLayer()})
	if !errors.Is(err, builder.ErrNotFound) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Fatalf("missing platform: %v; want ErrNotFound naming it", err)
	}
}

// TestPrivateOrigin reads from an origin behind htpasswd: it works with the
// credential (Docker config or Kubernetes Secret) and fails clearly with
// ErrUnauthorized, pushing nothing, without it.
func TestPrivateOrigin(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{Htpasswd: harness.HtpasswdFile(t, "puller", "s3cret")})
	img := mustImage(t, imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Random, Size: 2 << 20, Seed: 7}}})
	ref := origin.Host + "/private/img:v1"
	ctx := context.Background()
	if _, err := imagegen.Push(ctx, ref, img, remote.WithAuth(&authn.Basic{Username: "puller", Password: "s3cret"})); err != nil {
		t.Fatalf("push: %v", err)
	}

	t.Run("no credential", func(t *testing.T) {
		cache := startCache(t)
		b, tmp := newBuilder(t, cache)
		_, err := b.Build(ctx, builder.Request{Image: ref, Settings: everyLayer()})
		if !errors.Is(err, builder.ErrUnauthorized) || !strings.Contains(err.Error(), "401") {
			t.Fatalf("got %v; want ErrUnauthorized with the 401", err)
		}
		requireNoTempFiles(t, tmp)
		cache.requireEmpty(t)
	})
	t.Run("wrong credential", func(t *testing.T) {
		cache := startCache(t)
		b, _ := newBuilder(t, cache)
		creds, err := builder.DockerConfigJSONCredentials([]byte(fmt.Sprintf(`{"auths":{%q:{"username":"puller","password":"nope"}}}`, origin.Host)))
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.Build(ctx, builder.Request{Image: ref, Settings: everyLayer(), OriginCredentials: creds})
		if !errors.Is(err, builder.ErrUnauthorized) {
			t.Fatalf("got %v; want ErrUnauthorized", err)
		}
		cache.requireEmpty(t)
	})
	t.Run("secret", func(t *testing.T) {
		cache := startCache(t)
		b, tmp := newBuilder(t, cache)
		cfg := fmt.Sprintf(`{"auths":{%q:{"username":"puller","password":"s3cret"}}}`, origin.Host)
		secret, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
			"data": map[string][]byte{".dockerconfigjson": []byte(cfg)}})
		creds, err := builder.SecretCredentials(secret)
		if err != nil {
			t.Fatal(err)
		}
		res, err := b.Build(ctx, builder.Request{Image: ref, Settings: everyLayer(), OriginCredentials: creds})
		if err != nil {
			t.Fatalf("build with the secret: %v", err)
		}
		if res.Platforms[0].Index == nil {
			t.Fatal("no index")
		}
		requireNoTempFiles(t, tmp)
	})
}

// bigImage has two layers large enough to interrupt mid-stream.
func bigImage() imagegen.Spec {
	return imagegen.Spec{Layers: []imagegen.Layer{
		{Kind: imagegen.Random, Size: 24 << 20, Files: 2, Seed: 31},
		{Kind: imagegen.Random, Size: 24 << 20, Files: 2, Seed: 32},
	}}
}

// TestInterrupted cancels a build mid-layer and cuts the origin connection
// mid-layer: the build fails with the right kind, leaves no temp files and
// pushes nothing.
func TestInterrupted(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	img := mustImage(t, bigImage())
	push(t, origin.Host+"/test/big:v1", img)

	t.Run("cancel", func(t *testing.T) {
		cache := startCache(t)
		p := startProxy(t, origin.Host, 4<<20, false)
		b, tmp := newBuilder(t, cache)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-p.reached
			cancel()
		}()
		_, err := b.Build(ctx, builder.Request{Image: p.Host + "/test/big:v1", Settings: everyLayer()})
		if !errors.Is(err, builder.ErrCancelled) {
			t.Fatalf("got %v; want ErrCancelled", err)
		}
		requireNoTempFiles(t, tmp)
		cache.requireEmpty(t)
	})
	t.Run("connection dropped", func(t *testing.T) {
		cache := startCache(t)
		p := startProxy(t, origin.Host, 4<<20, true)
		b, tmp := newBuilder(t, cache)
		_, err := b.Build(context.Background(), builder.Request{Image: p.Host + "/test/big:v1", Settings: everyLayer()})
		if !errors.Is(err, builder.ErrUnavailable) {
			t.Fatalf("got %v; want ErrUnavailable", err)
		}
		if p.blobGets.Load() == 0 {
			t.Fatal("no blob went through the proxy")
		}
		requireNoTempFiles(t, tmp)
		cache.requireEmpty(t)
	})
}

// TestCacheAuth pushes to a cache registry that needs a credential for
// writes: refused without it (ErrCacheWriteRefused, nothing stored), done
// with it.
func TestCacheAuth(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	ref := origin.Host + "/test/auth:v1"
	push(t, ref, mustImage(t, imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Random, Size: 2 << 20, Seed: 51}}}))
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{Auth: true})
	cache := cacheRegistry{Host: reg.Host, URL: reg.URL, Root: reg.Root}
	settings := everyLayer()

	b, tmp := newBuilder(t, cache)
	_, err := b.Build(context.Background(), builder.Request{Image: ref, Settings: settings})
	if !errors.Is(err, builder.ErrCacheWriteRefused) {
		t.Fatalf("no cache credential: got %v; want ErrCacheWriteRefused", err)
	}
	requireNoTempFiles(t, tmp)
	cache.requireEmpty(t)

	creds, err := builder.DockerConfigJSONCredentials([]byte(fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, reg.Host, reg.Username, reg.Password)))
	if err != nil {
		t.Fatal(err)
	}
	b, err = builder.New(builder.Config{CacheHost: reg.Host, CacheCredentials: creds, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Build(context.Background(), builder.Request{Image: ref, Settings: settings})
	if err != nil {
		t.Fatalf("with the cache credential: %v", err)
	}
	if res.Platforms[0].Index == nil {
		t.Fatal("no index pushed")
	}
}

// TestLayerKinds indexes an image with a Docker uncompressed tar layer, a
// zstd layer and a blob that is no layer at all: the tar is indexed (its
// zTOC lists its entries), the other two are skipped with their reasons.
func TestLayerKinds(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	cache := startCache(t)
	base := mustImage(t, imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Random, Size: 1 << 20, Seed: 61}}})
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	for i := 0; i < 20; i++ {
		body := bytes.Repeat([]byte{byte(i)}, 10000*i)
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("docker/f%d", i), Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write(body)
	}
	tw.WriteHeader(&tar.Header{Name: "docker/link", Typeflag: tar.TypeSymlink, Linkname: "f1"})
	tw.Close()
	dockerTar := static.NewLayer(tarball.Bytes(), types.DockerUncompressedLayer)
	img, err := mutate.Append(base,
		mutate.Addendum{Layer: dockerTar},
		mutate.Addendum{Layer: static.NewLayer(bytes.Repeat([]byte("zstd?"), 1000), types.OCILayerZStd)},
		mutate.Addendum{Layer: static.NewLayer([]byte(`{"not":"a layer"}`), "application/vnd.example.data.v1+json")},
	)
	if err != nil {
		t.Fatal(err)
	}
	ref := origin.Host + "/test/kinds:v1"
	push(t, ref, img)

	b, _ := newBuilder(t, cache)
	res, err := b.Build(context.Background(), builder.Request{Image: ref, Settings: everyLayer()})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	ls := res.Platforms[0].Layers
	if len(ls) != 4 {
		t.Fatalf("%d layers", len(ls))
	}
	for i, want := range []struct {
		state  builder.LayerState
		reason string
	}{{builder.LayerBuilt, ""}, {builder.LayerBuilt, ""}, {builder.LayerSkipped, "zstd"}, {builder.LayerSkipped, "not a layer"}} {
		if ls[i].State != want.state || !strings.Contains(ls[i].Reason, want.reason) {
			t.Errorf("layer %d (%s): %s %q; want %s %q", i, ls[i].MediaType, ls[i].State, ls[i].Reason, want.state, want.reason)
		}
	}
	named, _ := names.ParseReference(ref)
	z, err := ztoc.Unmarshal(bytes.NewReader(fetchBlob(t, cacheRepo(t, cache, names.Repository(named)), *ls[1].Ztoc)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ztocListing(z), tarListing(t, dockerTar); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Docker tar layer: zTOC %v, tar %v", got, want)
	}
}

// TestSharedLayers: a layer two images share, in different repositories,
// is fetched and indexed once. The second image's build (another Builder,
// as in another process) mounts the zTOC from the cache's catalog; its index
// names the same zTOC and soci reads every file of it. Other settings build
// the layer again.
func TestSharedLayers(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	cache := startCache(t)
	base := imagegen.Layer{Kind: imagegen.Compressible, Size: 3 << 20, Files: 40, Seed: 7}
	refA, refB := origin.Host+"/team-a/app:v1", origin.Host+"/team-b/svc:v1"
	imgA := mustImage(t, imagegen.Spec{Layers: []imagegen.Layer{base, {Kind: imagegen.Random, Size: 1 << 20, Files: 2, Seed: 1}}})
	imgB := mustImage(t, imagegen.Spec{Layers: []imagegen.Layer{base, {Kind: imagegen.Random, Size: 1 << 20, Files: 2, Seed: 2}}})
	push(t, refA, imgA)
	push(t, refB, imgB)
	baseDigest, _ := layers(t, imgA)[0].Digest()

	build := func(ref string, s builder.Settings) builder.PlatformResult {
		t.Helper()
		b, _ := newBuilder(t, cache)
		res, err := b.Build(context.Background(), builder.Request{Image: ref, Settings: s})
		if err != nil {
			t.Fatalf("build %s: %v", ref, err)
		}
		return res.Platforms[0]
	}
	from := len(origin.Output())
	a := build(refA, everyLayer())
	b := build(refB, everyLayer())
	if a.Layers[0].Reused || !b.Layers[0].Reused || b.Layers[1].Reused {
		t.Fatalf("reused: A %v %v, B %v %v; want only B's base", a.Layers[0].Reused, a.Layers[1].Reused, b.Layers[0].Reused, b.Layers[1].Reused)
	}
	if a.Layers[0].Ztoc.Digest != b.Layers[0].Ztoc.Digest {
		t.Fatalf("base zTOC %s in A, %s in B", a.Layers[0].Ztoc.Digest, b.Layers[0].Ztoc.Digest)
	}
	gets := 0
	for _, line := range strings.Split(origin.Output()[from:], "\n") {
		if strings.Contains(line, `"GET /v2/`) && strings.Contains(line, "/blobs/"+baseDigest.String()) {
			gets++
		}
	}
	if gets != 1 {
		t.Errorf("the shared layer was fetched %d times from the origin, want once", gets)
	}
	// B's index is whole in B's repository: soci extracts every file.
	named, _ := names.ParseReference(refB)
	repo := cacheRepo(t, cache, names.Repository(named))
	idx, _ := fetchIndex(t, repo, *b.Index)
	for _, blob := range idx.Blobs {
		z, err := ztoc.Unmarshal(bytes.NewReader(fetchBlob(t, repo, blob)))
		if err != nil {
			t.Fatalf("zTOC %s in B's repository: %v", blob.Digest, err)
		}
		if len(z.FileMetadata) == 0 {
			t.Errorf("zTOC %s lists no files", blob.Digest)
		}
	}
	// Other settings: the base is built again.
	other := everyLayer().WithSpanSize(1 << 20)
	if c := build(refB, other); c.Layers[0].Reused || c.Layers[0].Ztoc.Digest == b.Layers[0].Ztoc.Digest {
		t.Errorf("other settings reused the base's zTOC: %+v", c.Layers[0])
	}
}
