package realimages

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Trace runs r's workload warm and locally, in a chroot of an overlayfs of
// its cached layers, until it answers HTTP 200 on port, and returns the
// image paths it opened (absolute, sorted by first open) and how long the
// start took. Opens are seen with fanotify on the overlay mount, so the
// trace is what the workload itself reads; it is what the benchmark's
// physical limit counts. The image must be built (Build).
func Trace(ctx context.Context, r Recipe, port int) ([]string, time.Duration, error) {
	var uppers []string
	parent := ""
	for _, s := range r.Steps {
		key := stepKey(parent, s)
		uppers = append([]string{filepath.Join(Dir(), "steps", key, "upper")}, uppers...)
		parent = key
	}
	dir, err := os.MkdirTemp("", "realimages-trace-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	merged, upper, work := filepath.Join(dir, "m"), filepath.Join(dir, "u"), filepath.Join(dir, "w")
	for _, d := range []string{merged, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, 0, err
		}
	}
	if err := unix.Mount("overlay", merged, "overlay", 0,
		fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(uppers, ":"), upper, work)); err != nil {
		return nil, 0, fmt.Errorf("mount overlay: %w", err)
	}
	defer unix.Unmount(merged, unix.MNT_DETACH)
	proc := filepath.Join(merged, "proc")
	if err := unix.Mount("proc", proc, "proc", 0, ""); err != nil {
		return nil, 0, err
	}
	defer unix.Unmount(proc, unix.MNT_DETACH)

	fan, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_UNLIMITED_QUEUE, unix.O_RDONLY|unix.O_LARGEFILE)
	if err != nil {
		return nil, 0, fmt.Errorf("fanotify: %w", err)
	}
	defer unix.Close(fan)
	if err := unix.FanotifyMark(fan, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, unix.FAN_OPEN, unix.AT_FDCWD, merged); err != nil {
		return nil, 0, fmt.Errorf("fanotify mark: %w", err)
	}
	var mu sync.Mutex
	last := time.Now() // of the latest event
	seen := map[string]bool{}
	var order []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.Read(fan, buf)
			if err != nil || n <= 0 {
				return
			}
			for off := 0; off+24 <= n; {
				evLen := int(binary.LittleEndian.Uint32(buf[off:]))
				fd := int(int32(binary.LittleEndian.Uint32(buf[off+16:])))
				if evLen < 24 {
					break
				}
				if fd >= 0 {
					p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
					unix.Close(fd)
					if err == nil && strings.HasPrefix(p, merged+"/") {
						rel := strings.TrimPrefix(p, merged)
						mu.Lock()
						last = time.Now()
						if !seen[rel] {
							seen[rel] = true
							order = append(order, rel)
						}
						mu.Unlock()
					}
				}
				off += evLen
			}
		}
	}()

	cmd := exec.CommandContext(ctx, "chroot", append([]string{merged}, r.Config.Cmd...)...)
	cmd.Env = append(append([]string{}, r.Config.Env...), "PORT="+strconv.Itoa(port))
	cmd.Dir = "/"
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var took time.Duration
	for took == 0 {
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				took = time.Since(start)
			}
		}
		if time.Since(start) > 10*time.Minute || ctx.Err() != nil {
			return nil, 0, fmt.Errorf("%s workload gave no HTTP 200: %s", r.Name, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The kernel queues events the reader has yet to take: wait until it
	// has been quiet for a while.
	for {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		quiet := time.Since(last) > time.Second
		mu.Unlock()
		if quiet {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]string(nil), order...), took, nil
}
