package snapshotter_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/registry/names"
	"github.com/hermes-oci/hermes/tests/harness"
)

// reconfigure restarts hermes-snapshotter on the same root with another
// cache URL and extra configuration.
func (n *node) reconfigure(t *testing.T, cacheURL, config string) {
	t.Helper()
	n.sn.Stop(30 * time.Second)
	o := n.snOpts
	o.Dir, o.CacheURL, o.Config = n.sn.Dir, cacheURL, config
	n.snOpts = o
	n.sn = harness.StartHermesSnapshotter(t, o)
}

// closedPort returns a loopback URL nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

// corruptBlob flips the first byte of blob d in a registry's filesystem
// storage (distribution's layout, below root), so it is served with the old
// length and digest but other content.
func corruptBlob(t *testing.T, root string, d digest.Digest) {
	t.Helper()
	p := filepath.Join(root, "docker", "registry", "v2", "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("blob %s in the cache's storage: %v", d, err)
	}
	b[0] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startsCorrectly pulls im with snapshotter hermes, checks that no layer
// was mounted lazily, that a container reads the right bytes, and returns
// how long the pull took.
func startsCorrectly(t *testing.T, n *node, im image, id string) time.Duration {
	t.Helper()
	before := len(fuseMounts(t, n.sn.Root))
	img, took := pull(t, n, im.ref, snName)
	if m := fuseMounts(t, n.sn.Root); len(m) != before {
		t.Errorf("%d new FUSE mounts after a fallback pull, want none", len(m)-before)
	}
	args, want := sumCommand(t, im, append([]string{"data/hello.txt", "data/small.bin"}, largestFiles(im, "data/random/", 2)...)...)
	if out := run(t, n, img, snName, id, args...); out != want {
		t.Fatalf("container printed\n%s\nwant\n%s", out, want)
	}
	return took
}

// logSays waits briefly for hermes-snapshotter's log, from byte from on, to
// contain every one of parts on one line, and returns that line.
func logSays(t *testing.T, sn *harness.HermesSnapshotter, from int, parts ...string) string {
	t.Helper()
	var last string
	for i := 0; i < 50; i++ {
		out := sn.Output()
		if from > len(out) {
			from = 0
		}
		for _, line := range strings.Split(out[from:], "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return line
			}
		}
		last = out[from:]
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("hermes-snapshotter log has no line with %q; log since the pull:\n%s", parts, last)
	return ""
}

// TestFallbacks: with the cache refusing connections, hanging, or serving a
// zTOC that does not match its digest, an image still starts with the right
// content, through containerd's normal pull; the added time is printed, and
// the log says why.
func TestFallbacks(t *testing.T) {
	n := startNode(t, nodeOptions{})
	type result struct {
		name string
		took time.Duration
		why  string
	}
	var results []result

	// Baseline: no cache configured, so nothing is looked up.
	n.reconfigure(t, "", "")
	base := startsCorrectly(t, n, pushImage(t, n, "fb-base", lazySpec(70)), "fb-base")
	results = append(results, result{"no cache configured (baseline)", base, ""})

	t.Run("Refused", func(t *testing.T) {
		n.reconfigure(t, closedPort(t), "")
		from := len(n.sn.Output())
		took := startsCorrectly(t, n, pushImage(t, n, "fb-refused", lazySpec(71)), "fb-refused")
		line := logSays(t, n.sn, from, "no SOCI index", "connection refused")
		results = append(results, result{"cache refuses connections", took, line})
		if v := metric(t, n.sn, `hermes_snapshotter_resolutions_total{outcome="error"}`); v != 1 {
			t.Errorf("error resolutions = %v, want 1", v)
		}
	})

	t.Run("Hanging", func(t *testing.T) {
		n.reconfigure(t, n.cache.URL, "hermes.timeout = \"2s\"")
		im := pushImage(t, n, "fb-hanging", lazySpec(72))
		buildIndex(t, n.cache.Host, im) // the cache has it, but will not answer
		pid := n.cache.PID()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		cont := func() { _ = syscall.Kill(pid, syscall.SIGCONT) }
		t.Cleanup(cont)
		from := len(n.sn.Output())
		took := startsCorrectly(t, n, im, "fb-hanging")
		cont()
		line := logSays(t, n.sn, from, "no SOCI index", "within 2s")
		results = append(results, result{"cache hangs (SIGSTOP), timeout 2s", took, line})
	})

	t.Run("CorruptZtoc", func(t *testing.T) {
		n.reconfigure(t, n.cache.URL, "")
		im := pushImage(t, n, "fb-corrupt", lazySpec(73))
		p := buildIndex(t, n.cache.Host, im)
		var ztoc digest.Digest
		for _, l := range p.Layers {
			if l.Ztoc != nil {
				ztoc = l.Ztoc.Digest
			}
		}
		corruptBlob(t, n.cache.Root, ztoc)
		from := len(n.sn.Output())
		took := startsCorrectly(t, n, im, "fb-corrupt")
		line := logSays(t, n.sn, from, "no SOCI index", "mismatched digest")
		results = append(results, result{"cache serves a corrupt zTOC", took, line})
	})

	// "lookup" is the time the resolution itself added before containerd
	// went on with its normal pull, as the snapshotter logged it; "pull" is
	// the whole pull, whose rest varies by a few 100 ms run to run.
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-40s %10s %12s %12s\n", "scenario", "pull", "vs baseline", "lookup")
	for _, r := range results {
		lookup := "-"
		if i := strings.Index(r.why, " took="); i >= 0 {
			lookup = strings.Fields(r.why[i+len(" took="):])[0]
		}
		fmt.Fprintf(&b, "%-40s %10s %12s %12s\n", r.name, r.took.Round(time.Millisecond), (r.took - base).Round(time.Millisecond), lookup)
	}
	for _, r := range results {
		if r.why != "" {
			fmt.Fprintf(&b, "%s: %s\n", r.name, r.why)
		}
	}
	t.Log(b.String())
}

// TestNoIndex: with no index in the cache or next to the image, containerd
// pulls the image normally: whole layers from the origin, no FUSE mounts.
func TestNoIndex(t *testing.T) {
	n := startNode(t, nodeOptions{config: "hermes.upstream_discovery = true"})
	im := pushImage(t, n, "noindex", lazySpec(80))
	from := len(n.origin.Output())
	startsCorrectly(t, n, im, "noindex")
	reqs := accessLog(n.origin, from)
	for _, d := range layerDigests(t, im) {
		if _, whole, _, wn := blobBytes(reqs, d); wn != 1 || whole == 0 {
			t.Errorf("layer %s: %d whole downloads (%d B), want 1", d, wn, whole)
		}
	}
	if v := metric(t, n.sn, `hermes_snapshotter_resolutions_total{outcome="none"}`); v != 1 {
		t.Errorf("none resolutions = %v, want 1", v)
	}
	if v := metric(t, n.sn, `hermes_snapshotter_layer_prepares_total{mode="local"}`); int(v) != len(layerDigests(t, im)) {
		t.Errorf("local prepares = %v, want %d", v, len(layerDigests(t, im)))
	}
}

// TestUpstreamDiscovery: the index exists only next to the image at its
// registry (as `soci push` leaves it) and the cache has none; with upstream
// discovery on, the image still starts lazily.
func TestUpstreamDiscovery(t *testing.T) {
	n := startNode(t, nodeOptions{config: "hermes.upstream_discovery = true"})
	im := pushImage(t, n, "upstream", lazySpec(90))
	scratch := harness.StartRegistry(t, harness.RegistryOptions{})
	p := buildIndex(t, scratch.Host, im)
	named, err := names.ParseReference(im.ref)
	if err != nil {
		t.Fatal(err)
	}
	harness.CopyArtifact(t, scratch.Host+"/"+names.Repository(named), strings.TrimSuffix(im.ref, ":v1"), *p.Index)

	img, _ := pull(t, n, im.ref, snName)
	if m := fuseMounts(t, n.sn.Root); len(m) != len(indexedLayers(p)) {
		t.Errorf("%d FUSE mounts, want %d", len(m), len(indexedLayers(p)))
	}
	args, want := sumCommand(t, im, "data/hello.txt", "data/small.bin")
	if out := run(t, n, img, snName, "upstream", args...); out != want {
		t.Fatalf("container printed\n%s\nwant\n%s", out, want)
	}
	if v := metric(t, n.sn, `hermes_snapshotter_resolutions_total{outcome="upstream"}`); v != 1 {
		t.Errorf("upstream resolutions = %v, want 1", v)
	}
	logSays(t, n.sn, 0, "SOCI index resolved", "source=upstream")
}
