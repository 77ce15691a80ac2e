package fusesession

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// maxWrite is the request size every generation negotiates; the kernel
// keeps what the first one agreed.
const maxWrite = 128 << 10

func mountOptions(disableXAttrs, debug bool) *fuse.MountOptions {
	return &fuse.MountOptions{
		AllowOther:    true,
		FsName:        "soci",
		Name:          "soci",
		Debug:         debug,
		DisableXAttrs: disableXAttrs,
		MaxWrite:      maxWrite,
		// Its entries carry node IDs inside the buffer (see translator).
		DisableReadDirPlus: true,
	}
}

// mountNew opens /dev/fuse, mounts it at mountpoint and starts a server
// on it (the kernel's INIT is answered before it returns). It returns the
// server, a duplicate of the descriptor for the holder, and the kernel's
// INIT message.
func mountNew(mountpoint string, raw fuse.RawFileSystem, o *fuse.MountOptions) (*fuse.Server, int, []byte, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return nil, -1, nil, err
	}
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, -1, nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=%o,user_id=0,group_id=0,max_read=%d", fd, st.Mode&syscall.S_IFMT, o.MaxWrite)
	if o.AllowOther {
		data += ",allow_other"
	}
	// nodev, but setuid binaries of the image work in its containers.
	if err := syscall.Mount(o.FsName, mountpoint, "fuse."+o.Name, syscall.MS_NODEV, data); err != nil {
		syscall.Close(fd)
		return nil, -1, nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	srv, err := fuse.NewServer(raw, "/dev/fd/"+strconv.Itoa(fd), o)
	if err != nil {
		_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		syscall.Close(fd)
		return nil, -1, nil, fmt.Errorf("FUSE server for %s: %w", mountpoint, err)
	}
	dup, err := dupFD(fd)
	if err != nil {
		_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		return nil, -1, nil, err
	}
	init := srv.KernelSettings()
	b := unsafe.Slice((*byte)(unsafe.Pointer(init)), unsafe.Sizeof(*init))
	return srv, dup, append([]byte(nil), b...), nil
}

// attach starts a server on fd, a connection an earlier process set up
// and the kernel already initialised. go-fuse insists on answering INIT
// first, so it is handed a socket that plays the kernel's INIT (as
// recorded when the connection was made); once it has answered, the
// socket's descriptor number is pointed at the connection (dup3), and the
// server reads the kernel's queue from then on. fd is consumed.
func attach(fd int, init []byte, raw fuse.RawFileSystem, o *fuse.MountOptions) (*fuse.Server, int, error) {
	defer syscall.Close(fd)
	if len(init) < int(unsafe.Sizeof(fuse.InHeader{}))+8 {
		return nil, -1, fmt.Errorf("recorded INIT message is %d bytes", len(init))
	}
	sp, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, os.NewSyscallError("socketpair", err)
	}
	msg := append([]byte(nil), init...)
	binary.LittleEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.LittleEndian.PutUint32(msg[4:8], 26) // FUSE_INIT
	binary.LittleEndian.PutUint64(msg[8:16], 1)
	binary.LittleEndian.PutUint64(msg[16:24], 0)
	if _, err := syscall.Write(sp[1], msg); err != nil {
		syscall.Close(sp[0])
		syscall.Close(sp[1])
		return nil, -1, os.NewSyscallError("write INIT", err)
	}
	srv, err := fuse.NewServer(raw, "/dev/fd/"+strconv.Itoa(sp[0]), o)
	syscall.Close(sp[1]) // and go-fuse's answer with it
	if err != nil {
		syscall.Close(sp[0])
		return nil, -1, fmt.Errorf("FUSE server on a held connection: %w", err)
	}
	if err := unix.Dup3(fd, sp[0], unix.O_CLOEXEC); err != nil {
		// The server would read a dead socket: make it end.
		syscall.Close(sp[0])
		go srv.Serve()
		return nil, -1, os.NewSyscallError("dup3", err)
	}
	return srv, sp[0], nil
}

// resend asks the kernel to queue again the requests a previous process
// read from the connection but never answered (FUSE_NOTIFY_RESEND, Linux
// 6.9). Older kernels refuse it; such requests then wait until the
// restart timeout and fail.
func resend(fd int) error {
	var b [16]byte
	binary.LittleEndian.PutUint32(b[0:4], 16)
	binary.LittleEndian.PutUint32(b[4:8], 7) // FUSE_NOTIFY_RESEND
	_, err := syscall.Write(fd, b[:])
	if err != nil {
		return os.NewSyscallError("FUSE_NOTIFY_RESEND", err)
	}
	return nil
}

// waiting is how many requests of the FUSE connection mounted at path are
// in flight (fusectl's count), -1 when unknown. It reads mountinfo, never
// the mount itself, which would wait for a server.
func waiting(path string) int {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil || len(ms) == 0 {
		return -1
	}
	file := fmt.Sprintf("/sys/fs/fuse/connections/%d/waiting", ms[len(ms)-1].Minor)
	b, err := os.ReadFile(file)
	if err != nil {
		// fusectl is usually mounted by systemd; mount it if it is not.
		fusectlOnce.Do(func() { _ = syscall.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, "") })
		if b, err = os.ReadFile(file); err != nil {
			return -1
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

var fusectlOnce sync.Once

// isMount reports whether path is a mountpoint, from mountinfo.
func isMount(path string) bool {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	return err == nil && len(ms) > 0
}
