package snapshotter_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/hermes-oci/hermes/tests/harness"
)

// TestContainerdSuite runs containerd's own snapshotter test suite against
// hermes-snapshotter over its gRPC socket, one process per test case, as
// containerd's proxy plugin would talk to it.
//
// The suite is given the name "overlayfs": hermes-snapshotter's snapshots
// are soci's, which are overlayfs snapshots, so the suite's overlayfs
// expectations (no directory renames across layers) are the right ones.
func TestContainerdSuite(t *testing.T) {
	harness.RequireRoot(t)
	harness.RequireFUSE(t)
	bin := harness.HermesBin(t, "hermes-snapshotter")
	testsuite.SnapshotterSuite(t, "overlayfs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return startForSuite(bin, root)
	})
}

// startForSuite starts hermes-snapshotter on root (no cache, no registry
// access: the suite only makes local snapshots) and returns a client.
func startForSuite(bin, root string) (snapshots.Snapshotter, func() error, error) {
	dir := filepath.Dir(root)
	sock := filepath.Join(dir, "hermes.sock")
	cfg := filepath.Join(dir, "hermes.toml")
	if err := os.WriteFile(cfg, []byte("[hermes]\nhosts_dir = \"\"\ndocker_config = false\nsurvive_restarts = false\n[content_store]\ncontainerd_address = \"/nonexistent/containerd.sock\"\n"), 0o644); err != nil {
		return nil, nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "hermes-snapshotter.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, "--root", root, "--socket", sock, "--config", cfg, "--metrics-address", "", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the starting OS thread ends, not the process, and
	// the suite's goroutines lock and retire threads: start the child from a
	// thread held until it exits.
	started, done := make(chan error, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
		logf.Close()
	}()
	if err := <-started; err != nil {
		logf.Close()
		return nil, nil, err
	}
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				b, _ := os.ReadFile(logf.Name())
				return fmt.Errorf("hermes-snapshotter: %w\n%s", err, b)
			}
			return err
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return errors.New("hermes-snapshotter did not stop on SIGTERM")
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(logf.Name())
			return nil, nil, fmt.Errorf("hermes-snapshotter exited: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			return nil, nil, errors.Join(err, stop())
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, errors.Join(err, stop())
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "hermes")
	return sn, func() error { return errors.Join(conn.Close(), stop()) }, nil
}
