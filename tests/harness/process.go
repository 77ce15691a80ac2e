package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/tests/harness/need"
)

// InCI reports whether the tests run in CI (see package need).
func InCI() bool { return need.InCI() }

// Missing fails the test in CI and skips it elsewhere (see package need).
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	need.Missing(t, format, args...)
}

// CacheDir is where `make deps` keeps built components.
func CacheDir() string {
	if d := os.Getenv("HERMES_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "hermes-cache")
	}
	return filepath.Join(home, ".cache", "hermes")
}

// LookBin finds a component binary in $HERMES_CACHE/bin, then $PATH.
func LookBin(name string) (string, error) {
	p := filepath.Join(CacheDir(), "bin", name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p, nil
	}
	return exec.LookPath(name)
}

// Bin returns the path of a component binary, or ends the test via Missing.
func Bin(t testing.TB, name string) string {
	t.Helper()
	p, err := LookBin(name)
	if err != nil {
		Missing(t, "component %q not found in %s/bin or $PATH", name, CacheDir())
	}
	return p
}

// RequireRoot ends the test via Missing unless it runs as root (containerd,
// FUSE and mounts need it).
func RequireRoot(t testing.TB) {
	t.Helper()
	need.Root(t)
}

// RequireFUSE ends the test via Missing unless /dev/fuse exists.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		Missing(t, "/dev/fuse: %v", err)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TempDir returns a temporary directory under /tmp with a short path: unix
// socket paths are limited to 108 bytes, which t.TempDir() can exceed.
func TempDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", "hermes-"+prefix+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(d); err != nil {
			// Busy mounts below d are reported, not hidden.
			t.Logf("remove %s: %v", d, err)
		}
	})
	return d
}

// Process is a component started by a test. Its stdout and stderr go to Log.
type Process struct {
	Name string
	Log  string // path of the combined output
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs bin with args as a child in its own process group, logging to a
// file in dir, and registers a cleanup that stops it by PID and dumps its log
// if the test failed.
func Start(t testing.TB, name, dir string, bin string, args []string, env ...string) *Process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	onStarterThread(func() { err = cmd.Start() })
	if err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			p.Dump(t)
		}
	})
	return p
}

// Pdeathsig fires when the OS thread that forked the child exits, not the
// process; Go retires threads that a goroutine left locked (containerd's
// snapshotter suite does), which would kill components at random. Every
// child is therefore forked from one thread that is locked and never exits,
// so children still die with the test process, and only then.
var (
	starterOnce sync.Once
	starter     = make(chan func())
)

func onStarterThread(f func()) {
	starterOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for fn := range starter {
				fn()
			}
		}()
	})
	done := make(chan struct{})
	starter <- func() { f(); close(done) }
	<-done
}

// StartServer starts a component that serves (as Start does) and waits
// until readyURL answers and addr (host:port) accepts connections.
func StartServer(t testing.TB, name, dir, bin string, args, env []string, readyURL, addr string, timeout time.Duration) *Process {
	t.Helper()
	p := Start(t, name, dir, bin, args, env...)
	WaitFor(t, p, timeout, name+" readiness", HTTPReady(readyURL))
	WaitFor(t, p, 10*time.Second, name+" at "+addr, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	return p
}

// End stops the process for a restart: SIGKILL when crash is set (a
// crash), SIGTERM with grace otherwise.
func (p *Process) End(crash bool, grace time.Duration) {
	if crash {
		p.Kill()
	} else {
		p.Stop(grace)
	}
}

// PID is the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and its error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Wait waits up to timeout for the process to end by itself and returns
// its exit code; ok is false if it is still running.
func (p *Process) Wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs the process group.
// Safe to call more than once.
func (p *Process) Stop(grace time.Duration) {
	if ok, _ := p.Exited(); ok {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill ends the process with SIGKILL at once (a crash, for restart tests).
func (p *Process) Kill() {
	if ok, _ := p.Exited(); ok {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Output returns what the process has logged so far.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// Dump writes the process log into the test output, the tail if it is long.
func (p *Process) Dump(t testing.TB) {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		t.Logf("%s log: %v", p.Name, err)
		return
	}
	const max = 64 << 10
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	t.Logf("---- %s log (%s) ----\n%s---- end %s ----", p.Name, p.Log, b, p.Name)
}

// WaitFor polls cond every 50ms until it returns nil or the timeout passes;
// it fails the test with the last error, and the process's exit if it died.
func WaitFor(t testing.TB, p *Process, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if p != nil {
			if ok, perr := p.Exited(); ok {
				t.Fatalf("%s exited while waiting for %s: %v (last check: %v)", p.Name, what, perr, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// HTTPReady returns a check that succeeds once url answers with a status
// below 500.
func HTTPReady(url string) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// FileExists returns a check that succeeds once path exists.
func FileExists(path string) func() error {
	return func() error { _, err := os.Stat(path); return err }
}

// Run runs a CLI to completion with a timeout and returns its stdout; a
// non-zero exit fails the test with stderr.
func Run(t testing.TB, timeout time.Duration, bin string, args ...string) string {
	t.Helper()
	out, err := RunErr(timeout, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return out
}

// RunErr runs a CLI and returns stdout, or an error that includes stderr.
func RunErr(timeout time.Duration, bin string, args ...string) (string, error) {
	return RunEnvErr(timeout, nil, bin, args...)
}

// RunEnvErr is RunErr with extra environment (HOME, DOCKER_CONFIG: where
// CLIs keep logins).
func RunEnvErr(timeout time.Duration, env []string, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// PeakRSS returns a process's peak resident set size (VmHWM), in MiB.
func PeakRSS(tb testing.TB, pid int) float64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb); err != nil {
				tb.Fatalf("VmHWM of %d: %q: %v", pid, rest, err)
			}
			return kb / 1024
		}
	}
	tb.Fatalf("no VmHWM for process %d", pid)
	return 0
}
