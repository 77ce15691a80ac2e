package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// TestClusterRunsPods: the cluster starts, schedules a Pod (no nodeName:
// kube-scheduler places it) whose image has no index, and it runs through
// hermes-snapshotter's normal-pull path.
func TestClusterRunsPods(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	c := harness.StartCluster(t, harness.ClusterOptions{Hermes: true, Registries: []string{origin.Host}})
	img, err := imagegen.Image(imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Busybox}}, Entrypoint: []string{"/bin/sleep", "3600"}})
	if err != nil {
		t.Fatal(err)
	}
	ref := origin.Host + "/smoke/sleep:1"
	if _, err := imagegen.Push(context.Background(), ref, img); err != nil {
		t.Fatal(err)
	}
	cl := c.Client(t)
	start := time.Now()
	if err := cl.Create(context.Background(), harness.HostPod("default", "sleep", corev1.Container{Name: "c", Image: ref})); err != nil {
		t.Fatal(err)
	}
	took := c.WaitPodReady(t, "default", "sleep", start, 2*time.Minute)
	t.Logf("Pod Ready in %s", took.Round(10*time.Millisecond))
}

// TestOverlayfsRuntime: one node runs an image through hermes-snapshotter
// and, for a Pod of RuntimeClass overlayfs, through containerd's own
// overlayfs snapshotter.
func TestOverlayfsRuntime(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	c := harness.StartCluster(t, harness.ClusterOptions{Hermes: true, OverlayfsRuntime: true, Registries: []string{origin.Host}})
	img, err := imagegen.Image(imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Busybox}}, Entrypoint: []string{"/bin/sleep", "3600"}})
	if err != nil {
		t.Fatal(err)
	}
	ref := origin.Host + "/smoke/sleep:1"
	if _, err := imagegen.Push(context.Background(), ref, img); err != nil {
		t.Fatal(err)
	}
	cl := c.Client(t)
	if err := cl.Create(context.Background(), harness.OverlayfsRuntimeClass()); err != nil {
		t.Fatal(err)
	}
	p := harness.HostPod("default", "overlay", corev1.Container{Name: "c", Image: ref})
	rc := "overlayfs"
	p.Spec.RuntimeClassName = &rc
	start := time.Now()
	if err := cl.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	c.WaitPodReady(t, "default", "overlay", start, 2*time.Minute)
	snaps := c.Containerd.Ctr(t, "snapshots", "--snapshotter", "overlayfs", "ls")
	if len(strings.Split(strings.TrimSpace(snaps), "\n")) < 2 {
		t.Errorf("no overlayfs snapshots after an overlayfs Pod started:\n%s", snaps)
	}
}
