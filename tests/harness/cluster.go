package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hermes-oci/hermes/tools/imagegen"
)

// ClusterOptions configures StartCluster.
type ClusterOptions struct {
	// Hermes runs hermes-snapshotter on the node, as its systemd unit
	// would (started before containerd, stopped after it), and makes it
	// the CRI's snapshotter.
	Hermes bool
	// CacheURL is the snapshotter's cache registry (http://host:port).
	CacheURL string
	// SnapshotterConfig is extra snapshotter TOML (SnapshotterOptions.Config).
	SnapshotterConfig string
	// Registries are image registries (host:port) the node reaches over
	// plain HTTP: each gets a hosts.toml.
	Registries []string
	// OverlayfsRuntime adds a CRI runtime handler "overlayfs" whose Pods
	// (runtimeClassName: overlayfs, see OverlayfsRuntimeClass) use
	// containerd's own overlayfs snapshotter: the same image started with
	// and without Hermes on one node.
	OverlayfsRuntime bool
	// ProxyRuntimes adds, per entry, a containerd proxy snapshotter at a
	// unix socket (name -> socket, already listening, e.g. upstream's
	// soci-snapshotter-grpc) and a CRI runtime handler of the same name
	// whose Pods (a RuntimeClass with that handler) use it: a peer
	// snapshotter beside hermes and overlayfs on one node.
	ProxyRuntimes map[string]string
	// CRIKeychain puts hermes-snapshotter between the kubelet and
	// containerd's image service (soci's CRI keychain), so the pull
	// credentials the kubelet sends for a Pod reach the snapshotter's layer
	// reads, as on a real node. Needs Hermes.
	CRIKeychain bool
}

// Cluster is a single-node Kubernetes cluster on this machine: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, containerd
// (CRI, runc) and a kubelet, plus hermes-snapshotter when asked, every
// component built from source and started with temporary roots. Pods run
// for real, with host networking (there is no CNI). The cleanup leaves no
// process, mount, kubelet cgroup or iptables rule behind.
type Cluster struct {
	*Kube
	ControllerManager *Process
	Scheduler         *Process
	Kubelet           *Process
	Containerd        *Containerd
	Snapshotter       *HermesSnapshotter // nil without Hermes
	// Node is the node's name; SandboxImage the pinned pause image.
	Node         string
	SandboxImage string
	// System is the registry that serves the sandbox image.
	System *Registry
	Dir    string
}

// NodeName is the one node's name.
const NodeName = "hermes-node"

// StartCluster starts the cluster and waits until the node is Ready and
// the default ServiceAccount exists.
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	RequireRoot(t)
	kcm, sched, kubelet := Bin(t, "kube-controller-manager"), Bin(t, "kube-scheduler"), Bin(t, "kubelet")
	k := StartKubeWith(t, KubeOptions{ServiceAccounts: true})
	c := &Cluster{Kube: k, Node: NodeName, Dir: TempDir(t, "node")}

	c.ControllerManager = Start(t, "kube-controller-manager", c.Dir, kcm, []string{
		"--kubeconfig=" + k.KubeconfigFor(t, "controller-manager", "system:kube-controller-manager"),
		"--service-account-private-key-file=" + k.SAKey, "--root-ca-file=" + k.PKI.CACert,
		"--use-service-account-credentials=true", "--leader-elect=false", "--secure-port=0",
		"--controllers=*,-nodeipam,-service-lb-controller,-route", "-v=1",
	})
	c.Scheduler = Start(t, "kube-scheduler", c.Dir, sched, []string{
		"--kubeconfig=" + k.KubeconfigFor(t, "scheduler", "system:kube-scheduler"), "--leader-elect=false", "--secure-port=0", "-v=1",
	})

	// The sandbox image comes from a registry of the cluster's own.
	c.System = StartRegistry(t, RegistryOptions{})
	c.SandboxImage = c.System.Host + "/system/pause:1"
	pause, err := imagegen.Image(imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Busybox}}, Entrypoint: []string{"/bin/sleep", "2147483647"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagegen.Push(context.Background(), c.SandboxImage, pause); err != nil {
		t.Fatal(err)
	}

	hosts := filepath.Join(c.Dir, "certs.d")
	for _, r := range append([]string{c.System.Host}, o.Registries...) {
		WriteHostsFile(t, hosts, r, "http://"+r)
	}
	// Registered before containerd's cleanups, so it runs after every task
	// is gone: the kubelet's cgroups and hard-coded files.
	t.Cleanup(func() { c.sweepNode(t) })
	ctrdOpts := ContainerdOptions{CRI: true, HostsDir: hosts, SandboxImage: c.SandboxImage}
	gates := ""
	if o.OverlayfsRuntime {
		ctrdOpts.RuntimeSnapshotters = map[string]string{"overlayfs": "overlayfs"}
		// The kubelet says which runtime handler a pull is for, so the
		// CRI pulls into that handler's snapshotter.
		gates = "featureGates: {RuntimeClassInImageCriApi: true}\n"
	}
	for name, sock := range o.ProxyRuntimes {
		if ctrdOpts.RuntimeSnapshotters == nil {
			ctrdOpts.RuntimeSnapshotters = map[string]string{}
		}
		if ctrdOpts.ProxySnapshotters == nil {
			ctrdOpts.ProxySnapshotters = map[string]string{}
		}
		ctrdOpts.RuntimeSnapshotters[name] = name
		ctrdOpts.ProxySnapshotters[name] = sock
		ctrdOpts.ProxyAnnotations = true
		gates = "featureGates: {RuntimeClassInImageCriApi: true}\n"
	}
	if o.Hermes {
		so := SnapshotterOptions{CacheURL: o.CacheURL, HostsDir: hosts, Config: o.SnapshotterConfig}
		if o.CRIKeychain {
			// The keychain forwards to containerd's image service through
			// the snapshotter directory's containerd.sock link.
			so.Dir = TempDir(t, "hsn")
			t.Cleanup(func() { UnmountBelow(t, so.Dir) })
			so.Config += fmt.Sprintf("\n[cri_keychain]\nenable_keychain = true\nimage_service_path = %q\n", filepath.Join(so.Dir, "containerd.sock"))
		}
		c.Snapshotter = StartHermesSnapshotter(t, so)
		if ctrdOpts.ProxySnapshotters == nil {
			ctrdOpts.ProxySnapshotters = map[string]string{}
		}
		ctrdOpts.ProxySnapshotters["hermes"] = c.Snapshotter.Socket
		ctrdOpts.CRISnapshotter = "hermes"
		// The CRI pulls through the transfer service, which hands proxy
		// snapshotters the image labels only when asked to.
		ctrdOpts.ProxyAnnotations = true
	}
	c.Containerd = StartContainerd(t, ctrdOpts)
	if c.Snapshotter != nil {
		c.Snapshotter.LinkContainerd(t, c.Containerd.Socket)
	}
	// No CNI plugin: a loopback-only network is enough for hostNetwork
	// Pods, and makes the node Ready.
	netd := filepath.Join(c.Containerd.Dir, "cni", "net.d")
	if err := os.MkdirAll(netd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(c.Containerd.Dir, "cni", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(netd, "10-hostnet-only.conflist"),
		[]byte(`{"cniVersion":"1.0.0","name":"hostnet-only","plugins":[{"type":"loopback"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}

	port, healthz := FreePort(t), FreePort(t)
	imageService := c.Containerd.Socket
	if o.CRIKeychain && c.Snapshotter != nil {
		imageService = c.Snapshotter.Socket
	}
	cfg := filepath.Join(c.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://%s
address: 0.0.0.0
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: %s}}
authorization: {mode: Webhook}
podLogsDir: %s
serializeImagePulls: false
evictionHard: {nodefs.available: "1%%", imagefs.available: "1%%", memory.available: "100Mi"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
makeIPTablesUtilChains: false
volumePluginDir: %s
imageServiceEndpoint: unix://%s
%s`, c.Containerd.Socket, port, healthz, k.PKI.CACert, filepath.Join(c.Dir, "pod-logs"), filepath.Join(c.Dir, "volume-plugins"), imageService, gates)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Kubelet = Start(t, "kubelet", c.Dir, kubelet, []string{
		"--config=" + cfg, "--kubeconfig=" + k.KubeconfigFor(t, "kubelet", "system:node:"+c.Node, "system:nodes"),
		"--root-dir=" + filepath.Join(c.Dir, "kubelet"), "--cert-dir=" + filepath.Join(c.Dir, "kubelet", "pki"),
		"--hostname-override=" + c.Node, "-v=1",
	})
	// The kubelet leaves its Pods running when it stops; their containers
	// go with containerd's cleanup, registered earlier, so it runs later.
	WaitFor(t, c.Kubelet, 90*time.Second, "kubelet healthz", HTTPReady(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz)))
	cl := k.Client(t)
	WaitFor(t, c.Kubelet, 90*time.Second, "node Ready", func() error {
		var n corev1.Node
		if err := cl.Get(context.Background(), client.ObjectKey{Name: c.Node}, &n); err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s not Ready", c.Node)
	})
	WaitFor(t, c.ControllerManager, 60*time.Second, "default ServiceAccount", func() error {
		var sa corev1.ServiceAccount
		return cl.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "default"}, &sa)
	})
	return c
}

// WaitPodReady waits until Pod ns/name is Ready and returns how long that
// took from since.
func (c *Cluster) WaitPodReady(t testing.TB, ns, name string, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	cl := c.Client(t)
	WaitFor(t, c.Kubelet, timeout, "Pod "+ns+"/"+name+" Ready", func() error {
		var p corev1.Pod
		if err := cl.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
			return err
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		msg := string(p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Waiting != nil {
				msg += fmt.Sprintf("; %s: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
			}
		}
		return fmt.Errorf("not Ready: %s", msg)
	})
	return time.Since(since)
}

// OverlayfsRuntimeClass is the RuntimeClass for Pods that should use
// containerd's overlayfs snapshotter (ClusterOptions.OverlayfsRuntime).
func OverlayfsRuntimeClass() *nodev1.RuntimeClass { return RuntimeClass("overlayfs") }

// RuntimeClass is the RuntimeClass of the CRI runtime handler name
// (OverlayfsRuntime, ProxyRuntimes).
func RuntimeClass(name string) *nodev1.RuntimeClass {
	return &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Handler: name}
}

// HostPod is a Pod for the one node with host networking (the cluster has
// no CNI).
func HostPod(ns, name string, containers ...corev1.Container) *corev1.Pod {
	grace := int64(1)
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{
		HostNetwork: true, TerminationGracePeriodSeconds: &grace, Containers: containers,
	}}
}

// sweepNode removes what the kubelet leaves outside its root: its Pod
// cgroups, the device-plugin socket and the container log links into this
// node's directory.
func (c *Cluster) sweepNode(t testing.TB) {
	if c.Kubelet != nil {
		c.Kubelet.Stop(10 * time.Second)
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if b, _ := filepath.Glob("/sys/fs/cgroup/kubepods"); len(b) > 0 {
		roots = append(roots, b...)
	}
	for _, root := range roots {
		removeCgroupTree(t, root)
	}
	// The kubelet bind-mounts its root onto itself and mounts each Pod's
	// volumes; it unmounts none of that when it stops.
	UnmountBelow(t, c.Dir)
	_ = os.Remove("/var/lib/kubelet/device-plugins/kubelet.sock")
	links, _ := filepath.Glob("/var/log/containers/*")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, c.Dir) {
			_ = os.Remove(l)
		}
	}
}

// removeCgroupTree removes a cgroup directory tree, deepest first (a cgroup
// can only be removed once it has no children and no processes).
func removeCgroupTree(t testing.TB, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(t, filepath.Join(dir, e.Name()))
		}
	}
	if err := syscall.Rmdir(dir); err != nil && !os.IsNotExist(err) {
		t.Logf("remove cgroup %s: %v", dir, err)
	}
}
