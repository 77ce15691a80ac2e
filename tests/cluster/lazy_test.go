package cluster

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// world is a cluster with Hermes: an origin registry, the cluster with
// hermes-snapshotter on its node, and hermes-controller with its cache
// registry, which the node's snapshotter asks first.
type world struct {
	origin *harness.Registry
	c      *harness.Cluster
	ctl    *harness.Controller
	cl     client.Client
	ctx    context.Context
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t, harness.RegistryOptions{}, false)
}

// newWorldWith is newWorld with an origin configured and, with keychain,
// the kubelet's pull credentials reaching the snapshotter.
func newWorldWith(t *testing.T, origin harness.RegistryOptions, keychain bool) *world {
	t.Helper()
	w := &world{origin: harness.StartRegistry(t, origin)}
	port := harness.FreePort(t)
	w.c = harness.StartCluster(t, harness.ClusterOptions{Hermes: true, CacheURL: fmt.Sprintf("http://127.0.0.1:%d", port),
		Registries: []string{w.origin.Host}, CRIKeychain: keychain})
	w.c.InstallCRDs(t)
	w.ctl = harness.StartController(t, w.c.Kube, harness.ControllerOptions{Port: port})
	w.cl = w.c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	w.ctx = ctx
	return w
}

// image is a pushed image with its merged tree.
type image struct {
	ref  string
	img  v1.Image
	tree map[string]imagegen.FileInfo
}

func (w *world) push(t *testing.T, repoTag string, spec imagegen.Spec, opts ...remote.Option) image {
	t.Helper()
	img, err := imagegen.Image(spec)
	if err != nil {
		t.Fatal(err)
	}
	ref := w.origin.Host + "/" + repoTag
	if _, err := imagegen.Push(w.ctx, ref, img, opts...); err != nil {
		t.Fatal(err)
	}
	tree, err := imagegen.Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	return image{ref: ref, img: img, tree: tree}
}

// workload is a container that prints the sha256 of files, then marks
// itself ready: Pod Ready means the workload has read what it needs.
func workload(ref string, files ...string) corev1.Container {
	var paths []string
	for _, f := range files {
		paths = append(paths, "/"+f)
	}
	return corev1.Container{Name: "app", Image: ref,
		Command: []string{"/bin/sh", "-c", "sha256sum " + strings.Join(paths, " ") + " && touch /tmp/done && exec sleep 3600"},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/test", "-f", "/tmp/done"}}},
			PeriodSeconds: 1, FailureThreshold: 600}}
}

// want is what workload prints for files of im.
func (im image) want(t *testing.T, files ...string) string {
	t.Helper()
	var b strings.Builder
	for _, f := range files {
		fi, ok := im.tree[f]
		if !ok {
			t.Fatalf("%s is not in the image", f)
		}
		fmt.Fprintf(&b, "%s  /%s\n", fi.SHA256, f)
	}
	return b.String()
}

// largest returns the n largest regular files below prefix.
func (im image) largest(prefix string, n int) []string {
	var ps []string
	for p, fi := range im.tree {
		if fi.Type == '0' && strings.HasPrefix(p, prefix) {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool {
		return im.tree[ps[i]].Size > im.tree[ps[j]].Size || im.tree[ps[i]].Size == im.tree[ps[j]].Size && ps[i] < ps[j]
	})
	return ps[:min(n, len(ps))]
}

// trigger creates a Pod that wants im but runs nowhere (no node matches
// it), so the controller builds the index before any node pulls the image.
func (w *world) trigger(t *testing.T, ns, name, ref string) {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{
		NodeSelector: map[string]string{"hermes.dev/trigger-only": "true"},
		Containers:   []corev1.Container{{Name: "c", Image: ref}}}}
	if err := w.cl.Create(w.ctx, p); err != nil {
		t.Fatal(err)
	}
}

func (w *world) policy(t *testing.T, name, regex string) {
	t.Helper()
	if err := w.cl.Create(w.ctx, &v1alpha1.HermesPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.HermesPolicySpec{ImageSelectors: []v1alpha1.ImageSelector{{ImageRegex: regex}}}}); err != nil {
		t.Fatal(err)
	}
}

func (w *world) waitReady(t *testing.T, policy string, n int32) v1alpha1.HermesPolicyStatus {
	t.Helper()
	var st v1alpha1.HermesPolicyStatus
	harness.WaitFor(t, w.ctl.Process, 5*time.Minute, fmt.Sprintf("policy %s: %d images Ready", policy, n), func() error {
		var p v1alpha1.HermesPolicy
		if err := w.cl.Get(w.ctx, client.ObjectKey{Name: policy}, &p); err != nil {
			return err
		}
		st = p.Status
		if st.Counts.Ready != n {
			return fmt.Errorf("counts %+v", st.Counts)
		}
		return nil
	})
	return st
}

func (w *world) logs(t *testing.T, ns, pod string) string {
	t.Helper()
	return w.c.Kubectl(t, "logs", "-n", ns, pod)
}

// TestLazyPod: a ≥1 GB image, a policy, a Pod that only asks for it → the
// policy is Ready; then a Pod on the node runs the image: its indexed
// layers are FUSE mounts read lazily (the origin sees range requests only
// for them) and the container's output proves its files are right.
func TestLazyPod(t *testing.T) {
	w := newWorld(t)
	im := w.push(t, "apps/big:v1", imagegen.PresetRandom(4, 270_000_000))
	w.policy(t, "apps", `/apps/`)
	w.trigger(t, "default", "trigger", im.ref)
	st := w.waitReady(t, "apps", 1)
	t.Logf("index %s built for %s", st.Images[0].IndexDigest, st.Images[0].Digest)

	m, _ := im.img.Manifest()
	indexed := map[string]bool{}
	for _, l := range m.Layers {
		if l.Size >= builder.DefaultMinLayerSize {
			indexed[l.Digest.String()] = true
		}
	}
	from := len(w.origin.Output())
	files := append([]string{"bin/busybox"}, im.largest("random-", 2)...)
	start := time.Now()
	if err := w.cl.Create(w.ctx, harness.HostPod("default", "app", workload(im.ref, files...))); err != nil {
		t.Fatal(err)
	}
	took := w.c.WaitPodReady(t, "default", "app", start, 5*time.Minute)
	t.Logf("Pod Ready %s after create", took.Round(10*time.Millisecond))
	if got, want := w.logs(t, "default", "app"), im.want(t, files...); got != want {
		t.Fatalf("the container printed\n%s\nwant\n%s", got, want)
	}
	if mounts := harness.FuseMounts(t, w.c.Snapshotter.Root); len(mounts) != len(indexed) {
		t.Errorf("%d FUSE mounts, want one per indexed layer (%d)", len(mounts), len(indexed))
	}
	reqs := w.origin.Requests(from)
	var ranged int64
	for d := range indexed {
		r, whole, rn, wn := harness.BlobGets(reqs, d)
		if wn > 0 || whole > 0 {
			t.Errorf("layer %s: %d whole GETs (%d bytes) at the origin; a lazy layer is only read in ranges", d, wn, whole)
		}
		ranged += r
		_ = rn
	}
	var size int64
	for _, l := range m.Layers {
		size += l.Size
	}
	t.Logf("origin sent %d of %d image bytes in range requests", ranged, size)
	if ranged == 0 || ranged > size/4 {
		t.Errorf("origin range bytes %d of an image of %d: want some, and far from all", ranged, size)
	}
}

// requireLazy checks how im's layers came since from: lazily (no whole
// layer GET at the origin, FUSE mounts for them) or by a normal pull (each
// indexable layer fetched whole once).
func (w *world) requireLazy(t *testing.T, im image, from int, lazy bool) {
	t.Helper()
	m, _ := im.img.Manifest()
	reqs := w.origin.Requests(from)
	n := 0
	for _, l := range m.Layers {
		if l.Size < builder.DefaultMinLayerSize {
			continue
		}
		n++
		_, _, _, whole := harness.BlobGets(reqs, l.Digest.String())
		if lazy && whole > 0 {
			t.Errorf("layer %s: %d whole GETs; a lazy layer is read in ranges only", l.Digest, whole)
		}
		if !lazy && whole != 1 {
			t.Errorf("layer %s: %d whole GETs; want the one of a normal pull", l.Digest, whole)
		}
	}
	if mounts := len(harness.FuseMounts(t, w.c.Snapshotter.Root)); lazy && mounts < n {
		t.Errorf("%d FUSE mounts; want at least the image's %d indexed layers", mounts, n)
	}
}

// small is an image of two lazily indexable layers (≥ the default minimum
// layer size) above busybox.
func small(seed int64) imagegen.Spec { return imagegen.PresetRandom(2, 12_000_000+seed) }

// TestFallbacks: an image no policy selects starts by a normal pull; with
// the controller (and its cache) gone, an image whose index the node
// already has still starts lazily, and a new image starts normally.
func TestFallbacks(t *testing.T) {
	w := newWorld(t)
	indexed := w.push(t, "apps/indexed:v1", small(1))
	other := w.push(t, "other/plain:v1", small(2))
	late := w.push(t, "apps/late:v1", small(3))
	w.policy(t, "apps", `/apps/`)
	w.trigger(t, "default", "trigger", indexed.ref)
	w.waitReady(t, "apps", 1)

	files := indexed.largest("random-", 1)
	run := func(name string, im image, lazy bool) {
		t.Helper()
		from := len(w.origin.Output())
		start := time.Now()
		if err := w.cl.Create(w.ctx, harness.HostPod("default", name, workload(im.ref, files...))); err != nil {
			t.Fatal(err)
		}
		took := w.c.WaitPodReady(t, "default", name, start, 3*time.Minute)
		t.Logf("%s Ready in %s", name, took.Round(10*time.Millisecond))
		w.requireLazy(t, im, from, lazy)
	}
	files = other.largest("random-", 1)
	run("plain", other, false) // (b) no policy: a normal pull
	files = indexed.largest("random-", 1)
	run("lazy", indexed, true)

	// (d) The controller and its cache go away.
	w.ctl.Stop(20 * time.Second)
	for _, p := range []string{"lazy"} {
		if err := w.cl.Delete(w.ctx, harness.HostPod("default", p)); err != nil {
			t.Fatal(err)
		}
	}
	harness.WaitFor(t, nil, time.Minute, "Pod lazy gone", func() error {
		var pods corev1.PodList
		if err := w.cl.List(w.ctx, &pods, client.InNamespace("default")); err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.Name == "lazy" {
				return fmt.Errorf("still there")
			}
		}
		return nil
	})
	w.c.Containerd.Ctr(t, "images", "rm", "--sync", indexed.ref)
	run("lazy-again", indexed, true)
	files = late.largest("random-", 1)
	run("late", late, false) // never indexed, cache down: a normal pull, no stall
}
