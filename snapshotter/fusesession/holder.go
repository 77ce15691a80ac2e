package fusesession

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// HolderOptions configure RunHolder.
type HolderOptions struct {
	// Socket is the unix socket snapshotters connect to.
	Socket string
	// RestartTimeout applies until a snapshotter says otherwise in its
	// hello: how long requests wait for a snapshotter to come back.
	RestartTimeout time.Duration
	// IdleExit ends the holder once it holds nothing and no snapshotter
	// has been connected for this long; 0 never ends it.
	IdleExit time.Duration
}

// The FUSE opcodes the kernel expects no answer to.
const (
	opForget      = 2
	opInterrupt   = 36
	opBatchForget = 42
)

type heldMount struct {
	fd    int
	state []byte
}

type holder struct {
	log  logr.Logger
	opts HolderOptions

	mu        sync.Mutex
	held      map[string]*heldMount
	clients   int
	downSince time.Time // when the last snapshotter went away
	idleSince time.Time
	failed    atomic.Int64 // requests answered with EIO
	failing   *failer
}

// RunHolder keeps /dev/fuse descriptors for snapshotters until ctx ends
// (or IdleExit). Ending it aborts every held mount that no snapshotter
// serves: it is meant to run until the node stops.
func RunHolder(ctx context.Context, o HolderOptions) error {
	log := logr.FromContextOrDiscard(ctx).WithName("holder")
	if o.RestartTimeout <= 0 {
		o.RestartTimeout = DefaultRestartTimeout
	}
	if err := os.MkdirAll(filepath.Dir(o.Socket), 0o700); err != nil {
		return err
	}
	if c, err := net.DialTimeout("unixpacket", o.Socket, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another holder is running", o.Socket)
	}
	if err := os.Remove(o.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: o.Socket, Net: "unixpacket"})
	if err != nil {
		return err
	}
	if err := os.Chmod(o.Socket, 0o600); err != nil {
		l.Close()
		return err
	}
	pidFile := PIDFile(o.Socket)
	if err := os.WriteFile(pidFile, []byte(fmt.Sprintln(os.Getpid())), 0o600); err != nil {
		l.Close()
		return err
	}
	defer os.Remove(pidFile)
	h := &holder{log: log, opts: o, held: map[string]*heldMount{}, idleSince: time.Now()}
	log.Info("holding FUSE sessions for hermes-snapshotter", "socket", o.Socket, "restartTimeout", o.RestartTimeout)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	go h.watch(ctx, cancel)
	var wg sync.WaitGroup
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			break
		}
		wg.Add(1)
		go func() { defer wg.Done(); h.serve(c) }()
	}
	h.mu.Lock()
	n := len(h.held)
	h.stopFailing()
	for id, m := range h.held {
		syscall.Close(m.fd)
		delete(h.held, id)
	}
	h.mu.Unlock()
	if n > 0 {
		log.Info("holder stopping: the mounts it held and no snapshotter serves are aborted", "mounts", n)
	}
	os.Remove(o.Socket)
	return nil
}

// PIDFile is where the holder listening on socket writes its process ID.
func PIDFile(socket string) string { return filepath.Join(filepath.Dir(socket), "holder.pid") }

// serve answers one snapshotter connection.
func (h *holder) serve(c *net.UnixConn) {
	defer c.Close()
	hello := false
	defer func() {
		if !hello {
			return
		}
		h.mu.Lock()
		h.clients--
		if h.clients == 0 {
			h.downSince = time.Now()
			h.idleSince = h.downSince
			if len(h.held) > 0 {
				h.log.Info("hermes-snapshotter went away: requests to its mounts wait in the kernel until it is back",
					"mounts", len(h.held), "restartTimeout", h.opts.RestartTimeout)
			}
		}
		h.mu.Unlock()
	}()
	for {
		m, fd, err := recv(c)
		if err != nil {
			return
		}
		var reply message
		switch m.Op {
		case "hello":
			h.mu.Lock()
			if !hello {
				hello = true
				h.clients++
			}
			if m.RestartTimeout > 0 {
				h.opts.RestartTimeout = m.RestartTimeout
			}
			h.stopFailing()
			reply = message{Op: "hello", Held: len(h.held), DownSince: h.downSince, Failed: h.failed.Load()}
			h.mu.Unlock()
		case "put":
			if fd < 0 || m.ID == "" {
				reply = message{Op: "error", Error: "put needs an id and a descriptor"}
				break
			}
			h.mu.Lock()
			if old, ok := h.held[m.ID]; ok {
				syscall.Close(old.fd)
			}
			h.held[m.ID] = &heldMount{fd: fd, state: m.State}
			h.mu.Unlock()
			fd = -1
			reply = message{Op: "ok"}
		case "del":
			h.mu.Lock()
			if old, ok := h.held[m.ID]; ok {
				syscall.Close(old.fd)
				delete(h.held, m.ID)
			}
			h.mu.Unlock()
			reply = message{Op: "ok"}
		case "take":
			h.mu.Lock()
			h.stopFailing()
			var err error
			for id, hm := range h.held {
				if err = send(c, message{Op: "entry", ID: id, State: hm.state}, hm.fd); err != nil {
					break
				}
			}
			h.mu.Unlock()
			if err != nil {
				return
			}
			reply = message{Op: "end"}
		default:
			reply = message{Op: "error", Error: fmt.Sprintf("unknown op %q", m.Op)}
		}
		if fd >= 0 {
			syscall.Close(fd)
		}
		if err := send(c, reply, -1); err != nil {
			return
		}
	}
}

// watch drops descriptors of connections that ended (unmounted), starts
// failing requests once the snapshotter has been away too long, and ends
// an idle holder.
func (h *holder) watch(ctx context.Context, stop func()) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		for id, m := range h.held {
			if dead(m.fd) {
				syscall.Close(m.fd)
				delete(h.held, id)
				h.log.V(1).Info("mount is gone; dropped its descriptor", "mountpoint", id)
			}
		}
		now := time.Now()
		if h.clients == 0 && h.failing == nil && len(h.held) > 0 && !h.downSince.IsZero() &&
			now.Sub(h.downSince) > h.opts.RestartTimeout {
			h.log.Info("hermes-snapshotter did not come back within the restart timeout: failing requests to its lazily mounted layers with EIO until it does",
				"mounts", len(h.held), "down", now.Sub(h.downSince).Round(time.Second), "restartTimeout", h.opts.RestartTimeout,
				"setting", "[hermes] restart_timeout")
			h.startFailing()
		}
		if len(h.held) > 0 || h.clients > 0 {
			h.idleSince = now
		}
		idle := h.opts.IdleExit > 0 && now.Sub(h.idleSince) > h.opts.IdleExit
		h.mu.Unlock()
		if idle {
			h.log.Info("holder idle: nothing held and no snapshotter connected; exiting", "idle", h.opts.IdleExit)
			stop()
			return
		}
	}
}

// dead reports whether the FUSE connection behind fd has ended.
func dead(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	if err != nil || n == 0 {
		return false
	}
	return p[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0
}

// failer answers every request on the held descriptors with EIO.
type failer struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

// startFailing and stopFailing are called with h.mu held.
func (h *holder) startFailing() {
	f := &failer{stop: make(chan struct{})}
	for id, m := range h.held {
		f.wg.Add(1)
		go func() { defer f.wg.Done(); h.fail(id, m.fd, f.stop) }()
	}
	h.failing = f
}

func (h *holder) stopFailing() {
	if h.failing == nil {
		return
	}
	close(h.failing.stop)
	h.failing.wg.Wait()
	h.failing = nil
}

func (h *holder) fail(id string, fd int, stop <-chan struct{}) {
	buf := make([]byte, 2<<20)
	logged := false
	for {
		select {
		case <-stop:
			return
		default:
		}
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if n == 0 || p[0].Revents&unix.POLLIN == 0 {
			if n > 0 && p[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
				return
			}
			continue
		}
		r, err := unix.Read(fd, buf)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOENT) {
				continue
			}
			return
		}
		if r < 40 {
			continue
		}
		op := binary.LittleEndian.Uint32(buf[4:8])
		unique := binary.LittleEndian.Uint64(buf[8:16])
		if op == opForget || op == opBatchForget || op == opInterrupt {
			continue
		}
		var out [16]byte
		binary.LittleEndian.PutUint32(out[0:4], 16)
		errno := -int32(syscall.EIO)
		binary.LittleEndian.PutUint32(out[4:8], uint32(errno))
		binary.LittleEndian.PutUint64(out[8:16], unique)
		_, _ = unix.Write(fd, out[:])
		h.failed.Add(1)
		if !logged {
			logged = true
			h.log.Info("answered a request with EIO: hermes-snapshotter is not back", "mountpoint", id, "opcode", op)
		}
	}
}
