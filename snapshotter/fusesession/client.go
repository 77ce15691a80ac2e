package fusesession

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// DefaultRestartTimeout is how long requests to held mounts wait for a
// snapshotter to come back before they fail with EIO.
const DefaultRestartTimeout = 2 * time.Minute

// SocketPath is where the holder of a snapshotter root listens.
func SocketPath(root string) string { return filepath.Join(root, "fusesession", "holder.sock") }

// Client is a snapshotter's connection to the holder. Its methods may be
// called concurrently.
type Client struct {
	mu sync.Mutex
	c  *net.UnixConn
}

// Held is a mount the holder keeps: its ID, state and a duplicate of its
// /dev/fuse descriptor (the caller's to close).
type Held struct {
	ID    string
	State json.RawMessage
	FD    int
}

// HelloInfo is what the holder says when a snapshotter connects.
type HelloInfo struct {
	Held      int
	DownSince time.Time
	Failed    int64
}

// Dial connects to the holder at socket.
func Dial(socket string) (*Client, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socket, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("FUSE session holder: %w", err)
	}
	return &Client{c: c}, nil
}

// StartHolder dials the holder at socket and, when none answers, starts
// exe as `exe holder --root root ...` in its own session, so it outlives
// the caller, logging to logFile. An empty exe only dials.
func StartHolder(socket, exe, root, logFile string, args ...string) (*Client, error) {
	c, err := Dial(socket)
	if err == nil || exe == "" {
		return c, err
	}
	if err := os.MkdirAll(filepath.Dir(logFile), 0o700); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(exe, append([]string{"holder", "--root", root}, args...)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the FUSE session holder: %w", err)
	}
	go cmd.Wait() //nolint:errcheck // reaped if it exits while we run
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := Dial(socket)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("FUSE session holder did not start (log: %s): %w", logFile, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Client) call(m message, fd int) (message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := send(c.c, m, fd); err != nil {
		return message{}, err
	}
	r, rfd, err := recv(c.c)
	if rfd >= 0 {
		syscall.Close(rfd)
	}
	if err != nil {
		return message{}, fmt.Errorf("FUSE session holder: %w", err)
	}
	if r.Op == "error" {
		return r, fmt.Errorf("FUSE session holder: %s", r.Error)
	}
	return r, nil
}

// Hello registers the caller as the serving snapshotter: until it
// disconnects, the holder does not touch the descriptors.
func (c *Client) Hello(restartTimeout time.Duration) (HelloInfo, error) {
	r, err := c.call(message{Op: "hello", RestartTimeout: restartTimeout}, -1)
	if err != nil {
		return HelloInfo{}, err
	}
	return HelloInfo{Held: r.Held, DownSince: r.DownSince, Failed: r.Failed}, nil
}

// Put gives the holder a duplicate of fd with state, under id.
func (c *Client) Put(id string, state json.RawMessage, fd int) error {
	_, err := c.call(message{Op: "put", ID: id, State: state}, fd)
	return err
}

// Del makes the holder close its descriptor for id.
func (c *Client) Del(id string) error {
	_, err := c.call(message{Op: "del", ID: id}, -1)
	return err
}

// Take returns every held mount, with a duplicate of its descriptor.
func (c *Client) Take() ([]Held, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := send(c.c, message{Op: "take"}, -1); err != nil {
		return nil, err
	}
	var out []Held
	for {
		r, fd, err := recv(c.c)
		if err != nil {
			for _, h := range out {
				syscall.Close(h.FD)
			}
			return nil, fmt.Errorf("FUSE session holder: %w", err)
		}
		switch r.Op {
		case "entry":
			if fd < 0 {
				continue
			}
			out = append(out, Held{ID: r.ID, State: r.State, FD: fd})
			continue
		case "end":
			return out, nil
		}
		if fd >= 0 {
			syscall.Close(fd)
		}
		return out, errors.New("FUSE session holder: unexpected answer " + r.Op)
	}
}

// Close disconnects; the holder starts its restart timeout.
func (c *Client) Close() error { return c.c.Close() }
