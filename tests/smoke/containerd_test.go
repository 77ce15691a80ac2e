package smoke

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// TestContainerdRunsImagegenImage pushes an imagegen image to a real origin
// registry, pulls it with a real containerd (overlayfs), runs a container
// that prints the sha256 of a file, and compares it with the source.
func TestContainerdRunsImagegenImage(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	ctrd := harness.StartContainerd(t, harness.ContainerdOptions{})
	ctrd.WriteHosts(t, origin.Host, origin.URL)

	payload := bytes.Repeat([]byte("hermes smoke test payload\n"), 40000) // ~1 MB
	spec := imagegen.Spec{
		Layers: []imagegen.Layer{
			{Kind: imagegen.Busybox},
			{Kind: imagegen.Files, Entries: []imagegen.Entry{
				{Name: "data", Type: '5', Mode: imagegen.DefaultMode},
				{Name: "data/payload.txt", Content: payload, Mode: 0o644},
			}},
			{Kind: imagegen.Random, Size: 3 << 20, Files: 3, Seed: 7},
		},
		Entrypoint: []string{"/bin/sha256sum"},
		Cmd:        []string{"/data/payload.txt"},
	}
	img, err := imagegen.Image(spec)
	if err != nil {
		t.Fatal(err)
	}
	ref := origin.Host + "/smoke/payload:v1"
	ctx, cancel := context.WithTimeout(ctrd.Context(t), 5*time.Minute)
	defer cancel()
	dgst, err := imagegen.Push(ctx, ref, img)
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}

	sum := sha256.Sum256(payload)
	want := hex.EncodeToString(sum[:])
	tree, err := imagegen.Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	if got := tree["data/payload.txt"].SHA256; got != want {
		t.Fatalf("imagegen.Tree reports sha256 %s for data/payload.txt, want %s", got, want)
	}

	client := ctrd.Client(t)
	image, err := client.Pull(ctx, ref, containerd.WithPullUnpack, containerd.WithResolver(ctrd.Resolver()),
		containerd.WithPullSnapshotter("overlayfs"))
	if err != nil {
		t.Fatalf("containerd pull %s: %v", ref, err)
	}
	if image.Target().Digest.String() != dgst.String() {
		t.Fatalf("containerd resolved %s, pushed %s", image.Target().Digest, dgst)
	}

	out := runContainer(ctx, t, client, image, "smoke")
	if got := strings.Fields(out); len(got) != 2 || got[0] != want || got[1] != "/data/payload.txt" {
		t.Fatalf("container printed %q, want %q", out, want+"  /data/payload.txt")
	}
	// The image is also visible to the CLI users use.
	if ls := ctrd.Ctr(t, "images", "ls", "-q"); !strings.Contains(ls, ref) {
		t.Fatalf("ctr images ls does not list %s:\n%s", ref, ls)
	}
}

// runContainer runs image's default process to completion and returns what
// it printed; a non-zero exit fails the test.
func runContainer(ctx context.Context, t *testing.T, client *containerd.Client, image containerd.Image, id string) string {
	t.Helper()
	ctr, err := client.NewContainer(ctx, id,
		containerd.WithImage(image),
		containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(id+"-snap", image),
		containerd.WithNewSpec(oci.WithImageConfig(image)))
	if err != nil {
		t.Fatalf("new container: %v", err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
	var stdout, stderr bytes.Buffer
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
	if err != nil {
		t.Fatalf("new task: %v", err)
	}
	defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	exitCh, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v", err)
	}
	select {
	case st := <-exitCh:
		code, _, err := st.Result()
		if err != nil || code != 0 {
			t.Fatalf("container exited %d (%v); stderr: %s", code, err, stderr.String())
		}
	case <-ctx.Done():
		_ = task.Kill(context.WithoutCancel(ctx), syscall.SIGKILL)
		t.Fatalf("container did not exit: %v", ctx.Err())
	}
	// cio copies output asynchronously; closing the IO waits for it.
	task.CloseIO(ctx)
	if io := task.IO(); io != nil {
		io.Wait()
	}
	return stdout.String()
}
