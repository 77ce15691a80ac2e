package fusesession

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// message is one request or answer on the holder socket (SOCK_SEQPACKET:
// one message per packet, at most one descriptor attached).
type message struct {
	Op string `json:"op"`
	// ID names a held mount (its mountpoint).
	ID string `json:"id,omitempty"`
	// State is the mount's persisted state, opaque to the holder.
	State json.RawMessage `json:"state,omitempty"`
	// RestartTimeout (hello) is how long the holder waits for a
	// snapshotter to come back before failing requests with EIO.
	RestartTimeout time.Duration `json:"restartTimeout,omitempty"`
	// Held (hello answer) is how many mounts the holder keeps;
	// DownSince is when the last snapshotter disconnected (zero: never).
	Held      int       `json:"held,omitempty"`
	DownSince time.Time `json:"downSince,omitzero"`
	// Failed counts requests the holder answered with EIO.
	Failed int64  `json:"failed,omitempty"`
	Error  string `json:"error,omitempty"`
}

const maxMessage = 1 << 20

func send(c *net.UnixConn, m message, fd int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = syscall.UnixRights(fd)
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("holder socket: %w", err)
	}
	if n != len(b) || oobn != len(oob) {
		return errors.New("holder socket: short write")
	}
	return nil
}

// recv reads one message and the descriptor that came with it (-1: none).
func recv(c *net.UnixConn) (message, int, error) {
	buf := make([]byte, maxMessage)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return message{}, -1, err
	}
	if n == 0 {
		return message{}, -1, net.ErrClosed
	}
	fd := -1
	if oobn > 0 {
		cms, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return message{}, -1, err
		}
		for _, cm := range cms {
			fds, err := syscall.ParseUnixRights(&cm)
			if err != nil {
				continue
			}
			for _, f := range fds {
				syscall.CloseOnExec(f)
				if fd < 0 {
					fd = f
				} else {
					syscall.Close(f)
				}
			}
		}
	}
	var m message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		if fd >= 0 {
			syscall.Close(fd)
		}
		return message{}, -1, fmt.Errorf("holder socket: bad message: %w", err)
	}
	return m, fd, nil
}

// dupFD duplicates fd with close-on-exec.
func dupFD(fd int) (int, error) {
	nfd, err := syscall.Dup(fd)
	if err != nil {
		return -1, os.NewSyscallError("dup", err)
	}
	syscall.CloseOnExec(nfd)
	return nfd, nil
}
