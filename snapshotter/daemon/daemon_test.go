package daemon

import (
	"context"
	"github.com/hermes-oci/hermes/snapshotter/internal/need"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Run serves snapshots over its socket, tells systemd when it is ready and
// when it stops, and reports health. (soci registers process-wide metrics,
// so Run starts once per test binary.)
func TestRunServesAndNotifies(t *testing.T) {
	if os.Geteuid() != 0 {
		need.Missing(t, "soci's snapshotter needs root")
	}
	dir, err := os.MkdirTemp("", "hermes-sn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify"))

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	metricsAddr := l.Addr().String()
	l.Close()
	opts := Options{
		Socket: filepath.Join(dir, "hermes.sock"), Root: filepath.Join(dir, "root"),
		ConfigPath: writeConfig(t, "[hermes]\nhosts_dir = \"\"\nsurvive_restarts = false\n[content_store]\ncontainerd_address = \"/nonexistent.sock\"\n"), ConfigRequired: true,
		MetricsAddress: metricsAddr,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts) }()

	readNotify := func(want string) {
		t.Helper()
		buf := make([]byte, 256)
		notify.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := notify.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("sd_notify: got %q (%v), want %q", buf[:n], err, want)
		}
	}
	readNotify("READY=1")

	resp, err := http.Get("http://" + metricsAddr + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`hermes_snapshotter_resolutions_total{outcome="cache_hit"} 0`, `hermes_snapshotter_origin_blob_bytes_total{kind="range"} 0`} {
		if !strings.Contains(string(body), m) {
			t.Errorf("metrics lack %s", m)
		}
	}

	conn, err := grpc.NewClient("unix://"+opts.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "hermes")
	nctx := namespaces.WithNamespace(ctx, "test")
	mounts, err := sn.Prepare(nctx, "active", "")
	if err != nil {
		t.Fatalf("Prepare over the socket: %v", err)
	}
	if len(mounts) != 1 {
		t.Fatalf("mounts %v", mounts)
	}
	if err := sn.Remove(nctx, "active"); err != nil {
		t.Fatal(err)
	}

	cancel()
	readNotify("STOPPING=1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := os.Stat(opts.Socket); err == nil {
		t.Errorf("socket %s left behind", opts.Socket)
	}
}
