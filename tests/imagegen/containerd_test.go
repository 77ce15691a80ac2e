package imagegentest

import (
	"context"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/opencontainers/image-spec/identity"

	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// TestEdgeCaseUnpacksInContainerd pulls the edge-case image into a real
// containerd with the overlayfs snapshotter, mounts the unpacked layers and
// compares the mounted tree with imagegen.Tree (types, modes, owners,
// content, link targets, xattrs), then runs a shell in it: the edge-case set
// must stay usable by containerd and runc.
func TestEdgeCaseUnpacksInContainerd(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	ctrd := harness.StartContainerd(t, harness.ContainerdOptions{})
	ctrd.WriteHosts(t, origin.Host, origin.URL)

	spec := imagegen.EdgeCase()
	spec.Entrypoint = []string{"/bin/sh", "-c"}
	spec.Cmd = []string{"cat /edge/links/rel /edge/links/hard && sha256sum /edge/big/sparse-64m && ls /edge/many | wc -l && id -u"}
	img, err := imagegen.Image(spec, imagegen.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := imagegen.Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	ref := origin.Host + "/imagegen/edge:containerd"
	ctx, cancel := context.WithTimeout(ctrd.Context(t), 5*time.Minute)
	defer cancel()
	if _, err := imagegen.Push(ctx, ref, img); err != nil {
		t.Fatal(err)
	}
	client := ctrd.Client(t)
	image, err := client.Pull(ctx, ref, containerd.WithPullUnpack, containerd.WithResolver(ctrd.Resolver()),
		containerd.WithPullSnapshotter("overlayfs"))
	if err != nil {
		t.Fatalf("containerd pull: %v", err)
	}

	// Mount a read-only view of the unpacked image.
	diffIDs, err := image.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sn := client.SnapshotService("overlayfs")
	mounts, err := sn.View(ctx, "edge-view", identity.ChainID(diffIDs).String())
	if err != nil {
		t.Fatalf("snapshot view: %v", err)
	}
	defer sn.Remove(context.WithoutCancel(ctx), "edge-view")
	dir := harness.TempDir(t, "edge-view")
	if err := mount.All(mounts, dir); err != nil {
		t.Fatalf("mount view: %v", err)
	}
	diffs, err := imagegen.CompareDir(dir, tree, imagegen.CompareOptions{})
	if uerr := mount.UnmountAll(dir, 0); uerr != nil {
		t.Errorf("unmount view: %v", uerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("overlayfs view differs from imagegen.Tree in %d places:\n%s", len(diffs), strings.Join(diffs, "\n"))
	}

	// Run it with ctr: busybox's shell and applets work on top of the edge
	// cases.
	out := ctrd.Ctr(t, "run", "--rm", "--snapshotter", "overlayfs", ref, "edge-run")
	want := []string{
		"the target, rewritten in layer 2", "hello from the target",
		tree["edge/big/sparse-64m"].SHA256 + "  /edge/big/sparse-64m",
		"2500", "0",
	}
	if got := strings.Split(strings.TrimSpace(out), "\n"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("container printed:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
}
