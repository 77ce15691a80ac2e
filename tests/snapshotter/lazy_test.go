package snapshotter_test

import (
	"strings"
	"testing"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/tools/imagegen"
	"github.com/opencontainers/go-digest"
)

// lazySpec is busybox, 24 MiB of random data in 6 files and a few small
// files, so that a container reading two data files needs a fraction of the
// image.
func lazySpec(seed int64) imagegen.Spec {
	return imagegen.Spec{Layers: []imagegen.Layer{
		{Kind: imagegen.Busybox},
		{Kind: imagegen.Random, Size: 24 << 20, Files: 6, Seed: seed, Root: "data/random"},
		{Kind: imagegen.Files, Entries: []imagegen.Entry{
			{Name: "data", Type: '5', Mode: imagegen.DefaultMode},
			{Name: "data/hello.txt", Content: []byte("hello from a lazily mounted layer\n"), Mode: 0o644},
			{Name: "data/small.bin", Size: 200 << 10, Fill: imagegen.FillRandom, Seed: seed, Mode: 0o644},
		}},
	}, Cmd: []string{"/bin/sh"}}
}

// checkOriginLazy asserts what the origin saw after a lazy start: no index
// lookups at all, and only range requests for the indexed layers.
func checkOriginLazy(t *testing.T, reqs []request, im image, indexed map[digest.Digest]bool, index digest.Digest) (ranged int64) {
	t.Helper()
	for _, r := range reqs {
		if strings.Contains(r.Path, "/referrers/") || strings.Contains(r.Path, "/manifests/sha256-") || strings.Contains(r.Path, index.String()) {
			t.Errorf("origin saw an index lookup: %s %s %d", r.Method, r.Path, r.Status)
		}
	}
	var total int64
	layers, _ := im.img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		sz, _ := l.Size()
		total += sz
		rb, wb, rn, wn := blobBytes(reqs, digest.Digest(d.String()))
		ranged += rb
		if indexed[digest.Digest(d.String())] && wn > 0 {
			t.Errorf("indexed layer %s was fetched whole (%d requests, %d bytes)", d, wn, wb)
		}
		t.Logf("layer %s (%d B): %d range requests, %d B; %d whole, %d B", d.Hex[:12], sz, rn, rb, wn, wb)
	}
	t.Logf("origin sent %d B of %d B of layers (%.1f%%)", ranged, total, 100*float64(ranged)/float64(total))
	return ranged
}

// TestLazyPull: the image's index exists only in the cache. Pulled with
// snapshotter hermes, its layers are FUSE mounts, the origin is asked only
// for byte ranges of them, and a container reads the right bytes.
func TestLazyPull(t *testing.T) {
	n := startNode(t, nodeOptions{})
	mounted := map[digest.Digest]bool{} // layers already lazily mounted

	t.Run("GoClient", func(t *testing.T) {
		im := pushImage(t, n, "lazy-client", lazySpec(61))
		p := buildIndex(t, n.cache.Host, im)
		indexed := indexedLayers(p)
		if len(indexed) != len(layerDigests(t, im)) {
			t.Fatalf("index covers %d of %d layers", len(indexed), len(layerDigests(t, im)))
		}
		from := len(n.origin.Output())
		img, took := pull(t, n, im.ref, snName)
		t.Logf("pull took %s", took)
		if m := fuseMounts(t, n.sn.Root); len(m) != len(indexed) {
			t.Errorf("%d FUSE mounts below the snapshotter root, want %d: %v", len(m), len(indexed), m)
		}
		for d := range indexed {
			mounted[d] = true
		}
		args, want := sumCommand(t, im, append([]string{"data/hello.txt", "data/small.bin"}, largestFiles(im, "data/random/", 2)...)...)
		if out := run(t, n, img, snName, "lazy-client", args...); out != want {
			t.Fatalf("container printed\n%s\nwant\n%s", out, want)
		}
		checkOriginLazy(t, accessLog(n.origin, from), im, indexed, p.Index.Digest)
		if v := metric(t, n.sn, `hermes_snapshotter_resolutions_total{outcome="cache_hit"}`); v != 1 {
			t.Errorf("cache_hit resolutions = %v, want 1 (one lookup per manifest)", v)
		}
		if v := metric(t, n.sn, `hermes_snapshotter_layer_prepares_total{mode="lazy"}`); int(v) != len(indexed) {
			t.Errorf("lazy prepares = %v, want %d", v, len(indexed))
		}
		if v := metric(t, n.sn, `hermes_snapshotter_origin_blob_bytes_total{kind="range"}`); v <= 0 {
			t.Errorf("no lazily fetched bytes counted")
		}
	})

	// With the builder's default minimum layer size the small layers get no
	// zTOC: containerd unpacks them, the others are mounted lazily.
	t.Run("LayersWithoutZtoc", func(t *testing.T) {
		spec := lazySpec(63)
		spec.Layers[1].Size = 12 << 20 // above the 10 MiB default; busybox and the small files are below
		im := pushImage(t, n, "lazy-partial", spec)
		p := buildIndexWith(t, n.cache.Host, im, builder.DefaultSettings())
		indexed := indexedLayers(p)
		if len(indexed) != 1 {
			t.Fatalf("index covers %d layers, want 1", len(indexed))
		}
		before := len(fuseMounts(t, n.sn.Root))
		from := len(n.origin.Output())
		img, took := pull(t, n, im.ref, snName)
		t.Logf("pull took %s", took)
		if m := fuseMounts(t, n.sn.Root); len(m)-before != 1 {
			t.Errorf("%d new FUSE mounts, want 1", len(m)-before)
		}
		args, want := sumCommand(t, im, append([]string{"data/hello.txt", "data/small.bin"}, largestFiles(im, "data/random/", 1)...)...)
		if out := run(t, n, img, snName, "lazy-partial", args...); out != want {
			t.Fatalf("container printed\n%s\nwant\n%s", out, want)
		}
		// soci downloads the layers without a zTOC once each; containerd
		// starts no whole download of the indexed one.
		reqs := accessLog(n.origin, from)
		for _, d := range layerDigests(t, im) {
			_, _, _, whole := blobBytes(reqs, d)
			if indexed[d] && whole > 0 || !indexed[d] && whole != 1 && !mounted[d] {
				t.Errorf("layer %s (zTOC %v): %d whole downloads", d, indexed[d], whole)
			}
		}
		if v := metric(t, n.sn, `hermes_snapshotter_layer_prepares_total{mode="soci_unpack"}`); v != 1 {
			t.Errorf("soci_unpack prepares = %v, want 1 (the small-files layer)", v)
		}
	})

	t.Run("Ctr", func(t *testing.T) {
		im := pushImage(t, n, "lazy-ctr", lazySpec(62))
		p := buildIndex(t, n.cache.Host, im)
		before := len(fuseMounts(t, n.sn.Root))
		from := len(n.origin.Output())
		n.ctrd.Ctr(t, "images", "pull", "--snapshotter", snName, im.ref)
		fresh := 0 // the busybox layer is shared with the first image
		for d := range indexedLayers(p) {
			if !mounted[d] {
				fresh++
			}
		}
		if m := fuseMounts(t, n.sn.Root); len(m)-before != fresh {
			t.Errorf("ctr pull added %d FUSE mounts, want %d", len(m)-before, fresh)
		}
		args, want := sumCommand(t, im, append([]string{"data/hello.txt"}, largestFiles(im, "data/random/", 1)...)...)
		out := n.ctrd.Ctr(t, append([]string{"run", "--rm", "--snapshotter", snName, im.ref, "lazy-ctr"}, args...)...)
		if out != want {
			t.Fatalf("ctr run printed\n%s\nwant\n%s", out, want)
		}
		checkOriginLazy(t, accessLog(n.origin, from), im, indexedLayers(p), p.Index.Digest)
	})
}
