package daemon

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestListenUnixSocketActivation: with a socket passed the way systemd
// passes one (fd 3, LISTEN_FDS, LISTEN_PID), listenUnix serves on it and
// does not create its own.
func TestListenUnixSocketActivation(t *testing.T) {
	if os.Getenv("HERMES_ACTIVATION_CHILD") == "1" {
		// The child: systemd sets LISTEN_PID to the service's pid.
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		own := os.Getenv("HERMES_ACTIVATION_OWN")
		l, err := listenUnix(own)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(own); err == nil {
			t.Fatalf("%s created: the passed socket should have been used", own)
		}
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("ok"))
		c.Close()
		return
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "passed.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestListenUnixSocketActivation$")
	cmd.Env = append(os.Environ(), "HERMES_ACTIVATION_CHILD=1", "LISTEN_FDS=1", "HERMES_ACTIVATION_OWN="+filepath.Join(dir, "own.sock"))
	cmd.ExtraFiles = []*os.File{f}
	out := make(chan []byte, 1)
	go func() {
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("child: %v\n%s", err, b)
		}
		out <- b
	}()
	c, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 2)
	if _, err := c.Read(b); err != nil || string(b) != "ok" {
		t.Fatalf("read %q, %v: the child did not serve the passed socket", b, err)
	}
	<-out
}
