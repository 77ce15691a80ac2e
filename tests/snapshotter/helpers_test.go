package snapshotter_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	ctdsnapshotters "github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// snName is the name containerd knows hermes-snapshotter by.
const snName = "hermes"

// node is one machine's worth of components: the origin registry images
// live in, the Hermes cache registry, containerd, and hermes-snapshotter.
type node struct {
	origin *harness.Registry
	cache  *harness.HermesRegistry
	ctrd   *harness.Containerd
	sn     *harness.HermesSnapshotter
	snOpts harness.SnapshotterOptions
	// user and password log in to a private origin: pushes, builds and
	// containerd's pulls use them.
	user, password string
}

type nodeOptions struct {
	// noCache starts no cache registry.
	noCache bool
	// cacheURL, when set, is given to the snapshotter instead of the cache's.
	cacheURL string
	// config is extra snapshotter TOML (see harness.SnapshotterOptions).
	config string
	// user and password make the origin private (htpasswd).
	user, password string
	// nodeCredentials gives the snapshotter the login in a docker
	// config.json (DOCKER_CONFIG, [hermes] docker_config).
	nodeCredentials bool
}

// startCacheRegistry starts hermes-registry, the cache the builder pushes
// to and the snapshotter reads through its Referrers API.
func startCacheRegistry(t *testing.T) *harness.HermesRegistry {
	return harness.StartHermesRegistry(t, harness.HermesRegistryOptions{})
}

func startNode(t *testing.T, o nodeOptions) *node {
	t.Helper()
	n := &node{user: o.user, password: o.password}
	ro := harness.RegistryOptions{}
	if o.user != "" {
		ro.Htpasswd = harness.HtpasswdFile(t, o.user, o.password)
	}
	n.origin = harness.StartRegistry(t, ro)
	if !o.noCache {
		n.cache = startCacheRegistry(t)
	}
	hostsDir := filepath.Join(harness.TempDir(t, "hosts"), "certs.d")
	harness.WriteHostsFile(t, hostsDir, n.origin.Host, n.origin.URL)
	cacheURL := o.cacheURL
	if cacheURL == "" && n.cache != nil {
		cacheURL = n.cache.URL
	}
	n.snOpts = harness.SnapshotterOptions{CacheURL: cacheURL, HostsDir: hostsDir, Config: o.config}
	if o.nodeCredentials {
		n.snOpts.DockerConfig = harness.DockerConfigDir(t, n.origin.Host, o.user, o.password)
	}
	n.sn = harness.StartHermesSnapshotter(t, n.snOpts)
	n.ctrd = harness.StartContainerd(t, harness.ContainerdOptions{
		ProxySnapshotters: map[string]string{snName: n.sn.Socket},
		HostsDir:          hostsDir,
		ProxyAnnotations:  true,
	})
	n.sn.LinkContainerd(t, n.ctrd.Socket)
	return n
}

// restartSnapshotter stops hermes-snapshotter (SIGTERM, or SIGKILL when
// crash is set) and starts it again on the same root and socket.
func (n *node) restartSnapshotter(t *testing.T, crash bool) {
	t.Helper()
	if crash {
		n.sn.Kill()
	} else {
		n.sn.Stop(30 * time.Second)
	}
	o := n.snOpts
	o.Dir = n.sn.Dir
	n.sn = harness.StartHermesSnapshotter(t, o)
}

// image is a generated image pushed to the origin.
type image struct {
	ref      string
	img      v1.Image
	manifest digest.Digest
	tree     map[string]imagegen.FileInfo
}

func pushImage(t *testing.T, n *node, name string, spec imagegen.Spec) image {
	t.Helper()
	img, err := imagegen.Image(spec)
	if err != nil {
		t.Fatalf("imagegen: %v", err)
	}
	ref := n.origin.Host + "/hermes-test/" + name + ":v1"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var opts []remote.Option
	if n.user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: n.user, Password: n.password}))
	}
	h, err := imagegen.Push(ctx, ref, img, opts...)
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	tree, err := imagegen.Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	return image{ref: ref, img: img, manifest: digest.Digest(h.String()), tree: tree}
}

// buildIndex builds im's SOCI index (every layer indexed) into the cache
// registry with Hermes' builder and returns what it built.
// everyLayer is the default settings with every layer indexed.
func everyLayer() builder.Settings {
	s := builder.DefaultSettings()
	s.MinLayerSize = 0
	return s
}

func buildIndex(t *testing.T, cacheHost string, im image) builder.PlatformResult {
	t.Helper()
	return buildIndexWith(t, cacheHost, im, everyLayer())
}

// buildIndexWith is buildIndex with the builder's settings.
func buildIndexWith(t *testing.T, cacheHost string, im image, settings builder.Settings) builder.PlatformResult {
	t.Helper()
	return buildIndexAs(t, cacheHost, im, settings, nil)
}

// buildIndexAs is buildIndexWith reading the origin with creds.
func buildIndexAs(t *testing.T, cacheHost string, im image, settings builder.Settings, creds auth.CredentialFunc) builder.PlatformResult {
	t.Helper()
	b, err := builder.New(builder.Config{CacheHost: cacheHost, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := b.Build(ctx, builder.Request{Image: im.ref, Settings: settings, OriginCredentials: creds})
	if err != nil {
		t.Fatalf("build index of %s: %v", im.ref, err)
	}
	if len(res.Platforms) != 1 || res.Platforms[0].Index == nil {
		t.Fatalf("build of %s made no index: %+v", im.ref, res)
	}
	return res.Platforms[0]
}

// indexedLayers returns the layers that got a zTOC.
func indexedLayers(p builder.PlatformResult) map[digest.Digest]bool {
	m := map[digest.Digest]bool{}
	for _, l := range p.Layers {
		if l.Ztoc != nil {
			m[l.Digest] = true
		}
	}
	return m
}

// pull pulls ref with the Go client the way the CRI does (image labels on
// every Prepare) into snapshotter sn, and returns the image and how long
// the pull took.
func pull(t *testing.T, n *node, ref, sn string) (containerd.Image, time.Duration) {
	t.Helper()
	client := n.ctrd.Client(t)
	ctx, cancel := context.WithTimeout(n.ctrd.Context(t), 5*time.Minute)
	defer cancel()
	t0 := time.Now()
	img, err := client.Pull(ctx, ref, pullOptsTo(n, ref, sn)...)
	if err != nil {
		t.Fatalf("pull %s into %s: %v", ref, sn, err)
	}
	return img, time.Since(t0)
}

// pullOpts are the options pull uses, into snapshotter hermes.
func pullOpts(n *node, ref string) []containerd.RemoteOpt { return pullOptsTo(n, ref, snName) }

func pullOptsTo(n *node, ref, sn string) []containerd.RemoteOpt {
	return []containerd.RemoteOpt{containerd.WithPullUnpack, containerd.WithPullSnapshotter(sn),
		containerd.WithResolver(n.ctrd.AuthResolver(n.user, n.password)),
		containerd.WithImageHandlerWrapper(ctdsnapshotters.AppendInfoHandlerWrapper(ref))}
}

// run runs args in a new container of img on snapshotter sn and returns
// its stdout; a non-zero exit fails the test.
func run(t *testing.T, n *node, img containerd.Image, sn, id string, args ...string) string {
	t.Helper()
	out, code, stderr := runCode(t, n, img, sn, id, args...)
	if code != 0 {
		t.Fatalf("container %s exited %d: %s", id, code, stderr)
	}
	return out
}

func runCode(t *testing.T, n *node, img containerd.Image, sn, id string, args ...string) (string, uint32, string) {
	t.Helper()
	client := n.ctrd.Client(t)
	ctx, cancel := context.WithTimeout(n.ctrd.Context(t), 5*time.Minute)
	defer cancel()
	ctr, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithSnapshotter(sn),
		containerd.WithNewSnapshot(id+"-rootfs", img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)))
	if err != nil {
		t.Fatalf("new container %s: %v", id, err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
	var stdout, stderr bytes.Buffer
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
	if err != nil {
		t.Fatalf("new task %s: %v", id, err)
	}
	defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	exitCh, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	var code uint32
	select {
	case st := <-exitCh:
		code = st.ExitCode()
	case <-ctx.Done():
		_ = task.Kill(context.WithoutCancel(ctx), syscall.SIGKILL)
		t.Fatalf("container %s did not exit: %v", id, ctx.Err())
	}
	task.CloseIO(ctx)
	if io := task.IO(); io != nil {
		io.Wait()
	}
	return stdout.String(), code, stderr.String()
}

// sumCommand returns a command printing the sha256 of paths, and the lines
// it must print according to the image's tree.
func sumCommand(t *testing.T, im image, paths ...string) ([]string, string) {
	t.Helper()
	var want strings.Builder
	for _, p := range paths {
		fi, ok := im.tree[p]
		if !ok {
			t.Fatalf("%s is not in the image", p)
		}
		fmt.Fprintf(&want, "%s  /%s\n", fi.SHA256, p)
	}
	args := []string{"/bin/sha256sum"}
	for _, p := range paths {
		args = append(args, "/"+p)
	}
	return args, want.String()
}

// largestFiles returns up to n regular files of the image below prefix,
// largest first.
func largestFiles(im image, prefix string, n int) []string {
	var ps []string
	for p, fi := range im.tree {
		if fi.Type == '0' && strings.HasPrefix(p, prefix) {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool {
		if im.tree[ps[i]].Size != im.tree[ps[j]].Size {
			return im.tree[ps[i]].Size > im.tree[ps[j]].Size
		}
		return ps[i] < ps[j]
	})
	if len(ps) > n {
		ps = ps[:n]
	}
	return ps
}

// fuseMounts lists the FUSE mount points below dir.
func fuseMounts(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// mount ID, parent, major:minor, root, mount point, options, optional
		// fields..., "-", fs type, source, super options
		for i := 6; i < len(f)-1; i++ {
			if f[i] == "-" {
				if strings.HasPrefix(f[i+1], "fuse") && strings.HasPrefix(f[4], dir+"/") {
					out = append(out, f[4])
				}
				break
			}
		}
	}
	return out
}

// request is one line of distribution's access log.
type request struct {
	Method, Path string
	Status       int
	Bytes        int64
	Range        bool
}

var accessLine = regexp.MustCompile(`"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)`)

// accessLog parses a registry's access log, from byte offset from on.
func accessLog(r *harness.Registry, from int) []request {
	out := r.Output()
	if from > len(out) {
		from = len(out)
	}
	var reqs []request
	sc := bufio.NewScanner(strings.NewReader(out[from:]))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		st, _ := strconv.Atoi(m[3])
		b, _ := strconv.ParseInt(m[4], 10, 64)
		reqs = append(reqs, request{Method: m[1], Path: m[2], Status: st, Bytes: b, Range: st == http.StatusPartialContent})
	}
	return reqs
}

// blobBytes sums the bytes the origin sent for blob d, split into range
// (206) and whole (200) responses.
func blobBytes(reqs []request, d digest.Digest) (ranged, whole int64, rangeReqs, wholeReqs int) {
	for _, r := range reqs {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.Path, "/blobs/"+d.String()) {
			continue
		}
		if r.Range {
			ranged += r.Bytes
			rangeReqs++
		} else if r.Status == http.StatusOK {
			whole += r.Bytes
			wholeReqs++
		}
	}
	return
}

// metric reads one sample of hermes-snapshotter's /metrics ("name{labels}").
func metric(t *testing.T, sn *harness.HermesSnapshotter, sample string) float64 {
	t.Helper()
	resp, err := http.Get(sn.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exported", sample)
	return 0
}

// layerDigests returns the image's layer digests, bottom first.
func layerDigests(t *testing.T, im image) []digest.Digest {
	t.Helper()
	m, err := im.img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var ds []digest.Digest
	for _, l := range m.Layers {
		ds = append(ds, digest.Digest(l.Digest.String()))
	}
	return ds
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

var _ = ocispec.MediaTypeImageManifest
