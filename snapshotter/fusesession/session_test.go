package fusesession

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hermes-oci/hermes/snapshotter/internal/need"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// These tests run the mechanism end to end on a real FUSE mount without
// soci: a child process (this test binary, re-executed) mounts a small
// tree and gives the connection to a holder; it is killed with SIGKILL
// while the test holds files of the mount open, and the test serves the
// connection again, as a restarted snapshotter does.

// tree is a fixed tree with stable inode numbers, as soci's layers have.
type tree struct {
	dir
	gen uint64
}

// stall is a file whose reads the first generation never answers: it has
// read the request when it dies, and only FUSE_NOTIFY_RESEND gets it to
// the next one.
type stall struct {
	fusefs.Inode
	gen uint64
}

func (s *stall) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (s *stall) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode, out.Size = 0o444, 5
	return 0
}

func (s *stall) Read(ctx context.Context, f fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if s.gen == 1 {
		select {}
	}
	return fuse.ReadResultData([]byte("late\n")[min(off, 5):]), 0
}

// dir lists its children.
type dir struct{ fusefs.Inode }

func content(name string) []byte {
	return bytes.Repeat([]byte(name+"\n"), 120000) // 240 KB: several reads
}

var treeFiles = []struct {
	dir, name string
	ino       uint64
}{{"", "a", 10}, {"", "b", 11}, {"d", "c", 12}, {"d", "e", 13}}

func (t *tree) OnAdd(ctx context.Context) {
	d := t.NewPersistentInode(ctx, &dir{}, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: 5})
	t.AddChild("d", d, false)
	t.AddChild("stall", t.NewPersistentInode(ctx, &stall{gen: t.gen}, fusefs.StableAttr{Ino: 20}), false)
	for _, f := range treeFiles {
		p := &t.Inode
		if f.dir != "" {
			p = d
		}
		p.AddChild(f.name, t.NewPersistentInode(ctx, &fusefs.MemRegularFile{Data: content(f.name), Attr: fuse.Attr{Mode: 0o444}},
			fusefs.StableAttr{Ino: f.ino}), false)
	}
}

func (t *dir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	var es []fuse.DirEntry
	for name, c := range t.Children() {
		es = append(es, fuse.DirEntry{Name: name, Ino: c.StableAttr().Ino, Mode: c.Mode()})
	}
	return fusefs.NewListDirStream(es), 0
}

func serveTree(gen uint64) (*translator, fuse.RawFileSystem) {
	root := &tree{gen: gen}
	sec := time.Second
	inner := fusefs.NewNodeFS(root, &fusefs.Options{AttrTimeout: &sec, EntryTimeout: &sec})
	t := newTranslator(inner, root.EmbeddedInode(), gen)
	return t, t
}

func requireFUSE(t *testing.T) {
	t.Helper()
	need.FUSE(t)
}

// TestMain lets the test binary act as the first generation.
func TestMain(m *testing.M) {
	if sock := os.Getenv("FUSESESSION_TEST_CHILD"); sock != "" {
		os.Exit(child(sock, os.Getenv("FUSESESSION_TEST_MOUNT")))
	}
	os.Exit(m.Run())
}

func child(sock, mp string) int {
	c, err := Dial(sock)
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	if _, err := c.Hello(0); err != nil {
		fmt.Println("hello:", err)
		return 1
	}
	_, raw := serveTree(1)
	srv, dup, init, err := mountNew(mp, raw, mountOptions(false, false))
	if err != nil {
		fmt.Println("mount:", err)
		return 1
	}
	go srv.Serve()
	b, _ := json.Marshal(mountState{Mountpoint: mp, Init: init, Generation: 1})
	if err := c.Put(mp, b, dup); err != nil {
		fmt.Println("put:", err)
		return 1
	}
	fmt.Println("ready")
	select {}
}

type fixture struct {
	mp, sock  string
	holderLog *bytes.Buffer
	child     *exec.Cmd
}

func start(t *testing.T, restartTimeout time.Duration) *fixture {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	f := &fixture{mp: filepath.Join(dir, "mnt"), sock: filepath.Join(dir, "holder.sock")}
	if err := os.Mkdir(f.mp, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunHolder(ctx, HolderOptions{Socket: f.sock, RestartTimeout: restartTimeout})
	}()
	for i := 0; ; i++ {
		if c, err := Dial(f.sock); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatal("holder did not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.child = exec.Command(os.Args[0], "-test.run=^$")
	f.child.Env = append(os.Environ(), "FUSESESSION_TEST_CHILD="+f.sock, "FUSESESSION_TEST_MOUNT="+f.mp)
	out, _ := f.child.StdoutPipe()
	f.child.Stderr = os.Stderr
	if err := f.child.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("child: %q", line)
	}
	t.Cleanup(func() {
		_ = f.child.Process.Kill()
		_ = f.child.Wait()
		_ = syscall.Unmount(f.mp, syscall.MNT_DETACH)
		cancel()
		<-done
	})
	return f
}

func (f *fixture) crash(t *testing.T) {
	t.Helper()
	if err := f.child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = f.child.Wait()
}

// takeOver serves the held connection as generation 2.
func (f *fixture) takeOver(t *testing.T) *fuse.Server {
	t.Helper()
	c, err := Dial(f.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Hello(0); err != nil {
		t.Fatal(err)
	}
	held, err := c.Take()
	if err != nil || len(held) != 1 {
		t.Fatalf("take: %v, %d held", err, len(held))
	}
	var st mountState
	if err := json.Unmarshal(held[0].State, &st); err != nil {
		t.Fatal(err)
	}
	_, raw := serveTree(2)
	srv, fd, err := attach(held[0].FD, st.Init, raw, mountOptions(false, false))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	if err := resend(fd); err != nil {
		t.Logf("resend: %v", err)
	}
	return srv
}

// TestSurvivesCrash: files opened and read before the crash keep reading
// the right bytes, reads issued during the gap complete once the new
// server is attached, and names not yet looked up resolve.
func TestSurvivesCrash(t *testing.T) {
	f := start(t, time.Minute)
	open := map[string]*os.File{}
	for _, p := range []string{"a", "d/c"} {
		fh, err := os.Open(filepath.Join(f.mp, p))
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		buf := make([]byte, 1000)
		if _, err := fh.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		open[p] = fh
	}
	// Read by the first generation, never answered.
	type result struct {
		what string
		err  error
	}
	results := make(chan result, 4)
	go func() {
		b, err := os.ReadFile(filepath.Join(f.mp, "stall"))
		if err == nil && string(b) != "late\n" {
			err = fmt.Errorf("read %q", b)
		}
		results <- result{"read stall (resent)", err}
	}()
	time.Sleep(200 * time.Millisecond)
	f.crash(t)

	// Issued while nobody serves: they wait in the kernel.
	issued := time.Now()
	go func() {
		b := make([]byte, 150000)
		n, err := open["a"].ReadAt(b, 30000)
		if err == nil && !bytes.Equal(b[:n], content("a")[30000:30000+n]) {
			err = errors.New("wrong bytes")
		}
		results <- result{"read a", err}
	}()
	go func() {
		b, err := os.ReadFile(filepath.Join(f.mp, "d", "e"))
		if err == nil && !bytes.Equal(b, content("e")) {
			err = errors.New("wrong bytes")
		}
		results <- result{"read d/e (new name)", err}
	}()
	go func() {
		b := make([]byte, len(content("c")))
		n, err := open["d/c"].ReadAt(b, 0)
		if err == nil && !bytes.Equal(b[:n], content("c")) {
			err = fmt.Errorf("wrong bytes (%d)", n)
		}
		results <- result{"reread d/c", err}
	}()
	select {
	case r := <-results:
		t.Fatalf("%s completed while no server ran: %v", r.what, r.err)
	case <-time.After(300 * time.Millisecond):
	}

	if w := waiting(f.mp); w < 3 {
		t.Errorf("fusectl counts %d requests waiting, want at least 3", w)
	}
	f.takeOver(t)
	for range 4 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Errorf("%s: %v", r.what, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("reads did not complete after the take-over")
		}
	}
	t.Logf("reads waited %s", time.Since(issued).Round(time.Millisecond))
	// And new names after it.
	if b, err := os.ReadFile(filepath.Join(f.mp, "b")); err != nil || !bytes.Equal(b, content("b")) {
		t.Errorf("read b after the take-over: %v", err)
	}
}

// TestRestartTimeout: a snapshotter that does not come back in time makes
// waiting reads fail with EIO instead of hanging, and a later one serves
// again.
func TestRestartTimeout(t *testing.T) {
	f := start(t, 300*time.Millisecond)
	fh, err := os.Open(filepath.Join(f.mp, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	f.crash(t)
	start := time.Now()
	_, err = fh.ReadAt(make([]byte, 1000), 5000)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read past the restart timeout: %v, want EIO", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("EIO came after %s", d)
	}
	f.takeOver(t)
	b := make([]byte, 1000)
	if _, err := fh.ReadAt(b, 5000); err != nil || !bytes.Equal(b, content("a")[5000:6000]) {
		t.Errorf("read after a late take-over: %v", err)
	}
}
