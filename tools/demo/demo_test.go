//go:build demo

// Package demo is `make demo`: the whole chain on one machine. It starts a
// single-node cluster (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd's CRI and a kubelet, with hermes-snapshotter on
// the node), hermes-controller, and an origin registry behind a link shaped
// to DEMO_BANDWIDTH holding a ≥1 GB image; applies the sample HermesPolicy;
// waits for the index with a progress line; then starts the same Pod once
// through Hermes and once with containerd's overlayfs (a RuntimeClass) and
// prints a table: Pod Ready, time to the app's first HTTP 200, bytes from
// the origin. Then it stays up with commands to explore until Ctrl-C, which
// removes every process, mount, cgroup and tc rule.
//
// It is a Go test driver (build tag demo) because the harness that starts
// and stops the components is test code; the Makefile builds it with
// `go test -c` and runs the binary, so Ctrl-C reaches it and its cleanups run.
//
// Settings (environment): DEMO_BANDWIDTH (tc rate, default 100mbit),
// DEMO_LAYERS (imagegen layers, default
// random:640MiB,compressible:1600MiB:files=20000), DEMO_NO_WAIT=1 (print the
// table and stop).
package demo

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func say(format string, args ...any) { fmt.Printf("\033[1m==> "+format+"\033[0m\n", args...) }

func TestDemo(t *testing.T) {
	bandwidth := env("DEMO_BANDWIDTH", "100mbit")
	layers, err := imagegen.ParseLayers(env("DEMO_LAYERS", "random:640MiB,compressible:1600MiB:files=20000"))
	if err != nil {
		t.Fatalf("DEMO_LAYERS: %v", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	say("starting an origin registry behind a %s link", bandwidth)
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	port, _ := strconv.Atoi(origin.Host[strings.LastIndexByte(origin.Host, ':')+1:])
	harness.ShapePort(t, port, bandwidth)

	say("starting a single-node cluster with hermes-snapshotter on its node")
	cachePort := harness.FreePort(t)
	c := harness.StartCluster(t, harness.ClusterOptions{Hermes: true, OverlayfsRuntime: true,
		CacheURL: fmt.Sprintf("http://127.0.0.1:%d", cachePort), Registries: []string{origin.Host}})
	c.InstallCRDs(t)
	say("starting hermes-controller with its cache registry")
	ctl := harness.StartController(t, c.Kube, harness.ControllerOptions{Port: cachePort, LogLevel: "info"})
	cl := c.Client(t)

	say("making the demo image (%d layers) and pushing it to the origin", len(layers)+1)
	spec := imagegen.Spec{Layers: append([]imagegen.Layer{{Kind: imagegen.Busybox}}, layers...)}
	img, err := imagegen.Image(spec)
	if err != nil {
		t.Fatal(err)
	}
	ref := origin.Host + "/demo/app:v1"
	if _, err := imagegen.Push(ctx, ref, img); err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	var size int64
	for _, l := range m.Layers {
		size += l.Size
	}
	tree, err := imagegen.Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	// The workload reads a few files of each data layer, as an app reads
	// some of its image at start.
	var random, treeFiles []string
	for p, fi := range tree {
		switch {
		case fi.Type != '0':
		case strings.HasPrefix(p, "random-"):
			random = append(random, "/"+p)
		case strings.HasPrefix(p, "tree-"):
			treeFiles = append(treeFiles, "/"+p)
		}
	}
	sort.Strings(random)
	sort.Strings(treeFiles)
	files := append(random[:min(3, len(random))], treeFiles[:min(60, len(treeFiles))]...)

	say("applying the sample policy, pointed at the demo image, and a Pod that asks for it (it stays Pending)")
	root, _ := harness.RepoRoot()
	sample := root + "/manifests/samples/hermespolicy.yaml"
	c.Kubectl(t, "apply", "-f", sample)
	policy := strings.TrimSpace(c.Kubectl(t, "get", "-f", sample, "-o", "jsonpath={.metadata.name}"))
	// The sample selects images of registries this machine cannot reach;
	// the demo selects its own image, in every namespace, for this node.
	c.Kubectl(t, "patch", "hp", policy, "--type=merge", "-p",
		`{"spec":{"imageSelectors":[{"imageRegex":"/demo/app:"}],"namespaceSelector":null,"platforms":["linux/amd64"]}}`)
	trigger := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ask"}, Spec: corev1.PodSpec{
		NodeSelector: map[string]string{"hermes.dev/nowhere": "true"}, Containers: []corev1.Container{{Name: "c", Image: ref}}}}
	if err := cl.Create(ctx, trigger); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var st v1alpha1.HermesPolicyStatus
	last := ""
	for {
		var p v1alpha1.HermesPolicy
		if err := cl.Get(ctx, client.ObjectKey{Name: policy}, &p); err == nil {
			st = p.Status
			if len(st.Images) > 0 {
				im := st.Images[0]
				line := fmt.Sprintf("%s %s", im.Phase, im.Image)
				if pr := im.Progress; pr != nil && pr.Bytes > 0 {
					line += fmt.Sprintf(": %d of %d layers, %.0f of %.0f MB", pr.LayersDone, pr.Layers, float64(pr.BytesDone)/1e6, float64(pr.Bytes)/1e6)
				}
				if line != last {
					fmt.Printf("\r    %-100s", line)
					last = line
				}
				if im.Phase == v1alpha1.PhaseReady || im.Phase == v1alpha1.PhaseFailed {
					fmt.Println()
					break
				}
			}
		}
		if ctx.Err() != nil {
			return // Ctrl-C: the cleanups stop everything
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st.Images[0].Phase != v1alpha1.PhaseReady {
		t.Fatalf("the index was not built: %s", st.Images[0].Message)
	}
	say("index %s built in %s (the build reads each layer once, over the same link)", st.Images[0].IndexDigest, time.Since(t0).Round(100*time.Millisecond))

	type row struct {
		mode        string
		ready, http time.Duration
		bytes       int64
	}
	var rows []row
	if err := cl.Create(ctx, harness.OverlayfsRuntimeClass()); err != nil {
		t.Fatal(err)
	}
	// Hermes first: its pull leaves the layers at the origin, so the
	// overlayfs pull after it starts from nothing as well.
	for _, mode := range []string{"hermes", "overlayfs"} {
		appPort := harness.FreePort(t)
		say("starting the Pod with %s", mode)
		pod := harness.HostPod("default", "app-"+mode, corev1.Container{Name: "app", Image: ref,
			Command:        []string{"/bin/sh", "-c", fmt.Sprintf("mkdir -p /tmp/www && sha256sum %s > /tmp/www/index.html && exec httpd -f -p %d -h /tmp/www", strings.Join(files, " "), appPort)},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(int32(appPort))}}, PeriodSeconds: 1, FailureThreshold: 3600}})
		if mode == "overlayfs" {
			rc := "overlayfs"
			pod.Spec.RuntimeClassName = &rc
		}
		from := len(origin.Output())
		start := time.Now()
		if err := cl.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		var first time.Duration
		for first == 0 {
			if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", appPort)); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					first = time.Since(start)
				}
			}
			if ctx.Err() != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		ready := c.WaitPodReady(t, "default", pod.Name, start, time.Hour)
		var bytes int64
		for _, r := range origin.Requests(from) {
			if strings.Contains(r.Path, "/blobs/") && r.Method == http.MethodGet {
				bytes += r.Bytes
			}
		}
		rows = append(rows, row{mode, ready, first, bytes})
		fmt.Printf("    Ready in %.1f s, first HTTP 200 after %.1f s, %.1f MB from the origin\n", ready.Seconds(), first.Seconds(), float64(bytes)/1e6)
		if mode == "hermes" {
			// The node keeps the image (its manifests; the layers stay at
			// the origin): remove it, or the kubelet would not pull it
			// again for overlayfs.
			if err := cl.Delete(ctx, pod); err != nil {
				t.Fatal(err)
			}
			harness.WaitFor(t, nil, 2*time.Minute, "the hermes Pod gone", func() error {
				if err := cl.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}); err == nil {
					return fmt.Errorf("still there")
				}
				return nil
			})
			c.Containerd.Ctr(t, "images", "rm", "--sync", ref)
		}
	}
	fmt.Printf("\nimage %s: %.2f GB in %d layers, link %s\n", ref, float64(size)/1e9, len(m.Layers), bandwidth)
	fmt.Printf("%-10s %12s %18s %20s\n", "mode", "Pod Ready", "first HTTP 200", "bytes from origin")
	for _, r := range rows {
		fmt.Printf("%-10s %11.1fs %17.1fs %17.1f MB\n", r.mode, r.ready.Seconds(), r.http.Seconds(), float64(r.bytes)/1e6)
	}
	h, o := rows[0], rows[1]
	fmt.Printf("%-10s %11.1fx %17.1fx %17.1fx\n", "ratio", o.ready.Seconds()/h.ready.Seconds(), o.http.Seconds()/h.http.Seconds(), float64(o.bytes)/float64(max(h.bytes, 1)))

	if os.Getenv("DEMO_NO_WAIT") != "" {
		return
	}
	repo, _ := artifacts.Repository(ref)
	fmt.Printf(`
Hermes stays up. Explore (Ctrl-C stops everything):
  export KUBECONFIG=%s
  kubectl get hp
  kubectl describe hp %s      # status and Events
  kubectl get pods -o wide
  oras discover --plain-http %s/%s@%s
  crane manifest --insecure %s/%s@%s
  mount -t fuse.rawBridge             # the lazily mounted layers
  curl -s %s | grep hermes_controller
`, c.Kubeconfig, policy, ctl.RegistryHost, repo, st.Images[0].Digest, ctl.RegistryHost, repo, st.Images[0].IndexDigest, ctl.MetricsURL)
	<-ctx.Done()
	say("stopping")
}
