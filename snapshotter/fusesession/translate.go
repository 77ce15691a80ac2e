package fusesession

import (
	"context"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Kernel-facing identifiers.
//
// Node IDs: the root is 1; every other node is its soci inode number (3 +
// the entry's metadata ID, or 1 and 2 for soci's state directory and
// file, which is why they are tagged) with nodeTag set. The numbers follow
// from the zTOC, so a later generation serving the same layer finds the
// node a kernel ID names by walking the tree.
//
// File handles: the inner handle with the generation that opened it in
// the top 16 bits. A handle of another generation is reopened on first use.
const (
	nodeTag  = uint64(1) << 40
	genShift = 48
	fhMask   = uint64(1)<<genShift - 1
)

func kernelID(ino uint64) uint64 { return ino | nodeTag }

// translator serves a go-fuse node filesystem (inner) to a kernel
// connection that may have been set up by an earlier generation. It is
// read-only: soci's layers are.
//
// Forgets are not passed on: inner keeps every node it was asked about,
// bounded by the files in the layer, because after a restart the kernel's
// lookup counts for nodes of the previous generation are unknown.
type translator struct {
	inner fuse.RawFileSystem
	root  *fusefs.Inode
	gen   uint64

	mu       sync.Mutex
	toInner  map[uint64]uint64 // kernel node ID -> inner node ID
	walked   bool
	reopened map[uint64]uint64 // kernel handle of another generation -> inner handle
	// onReattach is called once per kernel ID or handle of an earlier
	// generation that had to be resolved (metrics).
	onReattach func(kind string)
}

func newTranslator(inner fuse.RawFileSystem, root *fusefs.Inode, gen uint64) *translator {
	return &translator{inner: inner, root: root, gen: gen & 0xffff,
		toInner: map[uint64]uint64{1: 1}, reopened: map[uint64]uint64{}}
}

// node rewrites the kernel node ID *id to inner's.
func (t *translator) node(id *uint64) fuse.Status {
	if *id == 1 || *id == 0 {
		return fuse.OK
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	in, ok := t.toInner[*id]
	if !ok && !t.walked {
		t.walk()
		in, ok = t.toInner[*id]
		if ok && t.onReattach != nil {
			t.onReattach("node")
		}
	}
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	*id = in
	return fuse.OK
}

// learn records an entry inner answered and rewrites it for the kernel.
// Called with t.mu held.
func (t *translator) learnLocked(out *fuse.EntryOut) {
	if out.NodeId == 0 || out.NodeId == 1 {
		return
	}
	k := kernelID(out.Attr.Ino)
	t.toInner[k] = out.NodeId
	out.NodeId = k
}

// walk looks up every entry of the layer, so that every kernel ID an
// earlier generation handed out maps to an inner node. Called with t.mu
// held, once per generation and mount, on the first unknown ID.
func (t *translator) walk() {
	t.walked = true
	type dir struct {
		inode *fusefs.Inode
		id    uint64
	}
	stack := []dir{{t.root, 1}}
	ctx := context.Background()
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		rd, ok := d.inode.Operations().(fusefs.NodeReaddirer)
		if !ok {
			continue
		}
		names := []string{}
		if d.id == 1 {
			names = append(names, ".soci-snapshotter")
		}
		ds, errno := rd.Readdir(ctx)
		if errno == 0 {
			for ds.HasNext() {
				e, errno := ds.Next()
				if errno != 0 {
					break
				}
				if e.Name != "." && e.Name != ".." {
					names = append(names, e.Name)
				}
			}
			ds.Close()
		}
		for _, name := range names {
			var out fuse.EntryOut
			if st := t.inner.Lookup(nil, &fuse.InHeader{NodeId: d.id}, name, &out); !st.Ok() {
				continue
			}
			inID := out.NodeId
			t.learnLocked(&out)
			if out.Attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				if c := d.inode.GetChild(name); c != nil {
					stack = append(stack, dir{c, inID})
				}
			}
		}
	}
}

// fh rewrites a kernel file handle of node (an inner ID) to inner's,
// reopening a handle of an earlier generation.
func (t *translator) fh(fh *uint64, node uint64, dir bool) fuse.Status {
	if *fh == 0 {
		return fuse.OK
	}
	if *fh>>genShift == t.gen {
		*fh &= fhMask
		return fuse.OK
	}
	t.mu.Lock()
	in, ok := t.reopened[*fh]
	t.mu.Unlock()
	if ok {
		*fh = in
		return fuse.OK
	}
	var out fuse.OpenOut
	open := &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: node}, Flags: syscall.O_RDONLY}
	var st fuse.Status
	if dir {
		st = t.inner.OpenDir(nil, open, &out)
	} else {
		st = t.inner.Open(nil, open, &out)
	}
	if !st.Ok() {
		return st
	}
	t.mu.Lock()
	t.reopened[*fh] = out.Fh
	t.mu.Unlock()
	if t.onReattach != nil {
		t.onReattach("handle")
	}
	*fh = out.Fh
	return fuse.OK
}

func (t *translator) tag(fh uint64) uint64 {
	if fh == 0 {
		return 0
	}
	return t.gen<<genShift | fh&fhMask
}

// release rewrites the handle of a Release(Dir); false: nothing to release.
func (t *translator) release(in *fuse.ReleaseIn) bool {
	if t.node(&in.NodeId) != fuse.OK || in.Fh == 0 {
		return false
	}
	if in.Fh>>genShift == t.gen {
		in.Fh &= fhMask
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	inner, ok := t.reopened[in.Fh]
	delete(t.reopened, in.Fh)
	in.Fh = inner
	return ok
}

func (t *translator) String() string      { return "hermes-fusesession" }
func (t *translator) SetDebug(debug bool) { t.inner.SetDebug(debug) }
func (t *translator) Init(s *fuse.Server) { t.inner.Init(s) }
func (t *translator) OnUnmount()          { t.inner.OnUnmount() }

func (t *translator) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if st := t.node(&h.NodeId); !st.Ok() {
		return st
	}
	st := t.inner.Lookup(cancel, h, name, out)
	if st.Ok() {
		t.mu.Lock()
		t.learnLocked(out)
		t.mu.Unlock()
	}
	return st
}

func (t *translator) Forget(nodeid, nlookup uint64) {}

func (t *translator) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if st := t.node(&in.NodeId); !st.Ok() {
		return st
	}
	if in.Flags_&fuse.FUSE_GETATTR_FH != 0 {
		if st := t.fh(&in.Fh_, in.NodeId, false); !st.Ok() {
			in.Flags_ &^= fuse.FUSE_GETATTR_FH
			in.Fh_ = 0
		}
	}
	return t.inner.GetAttr(cancel, in, out)
}

func (t *translator) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	if st := t.node(&h.NodeId); !st.Ok() {
		return nil, st
	}
	return t.inner.Readlink(cancel, h)
}

func (t *translator) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if st := t.node(&in.NodeId); !st.Ok() {
		return st
	}
	return t.inner.Access(cancel, in)
}

func (t *translator) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if st := t.node(&h.NodeId); !st.Ok() {
		return 0, st
	}
	return t.inner.GetXAttr(cancel, h, attr, dest)
}

func (t *translator) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if st := t.node(&h.NodeId); !st.Ok() {
		return 0, st
	}
	return t.inner.ListXAttr(cancel, h, dest)
}

func (t *translator) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if st := t.node(&in.NodeId); !st.Ok() {
		return st
	}
	st := t.inner.Open(cancel, in, out)
	out.Fh = t.tag(out.Fh)
	return st
}

func (t *translator) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if st := t.node(&in.NodeId); !st.Ok() {
		return nil, st
	}
	if st := t.fh(&in.Fh, in.NodeId, false); !st.Ok() {
		return nil, st
	}
	return t.inner.Read(cancel, in, buf)
}

func (t *translator) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if st := t.node(&in.NodeId); !st.Ok() {
		return st
	}
	if st := t.fh(&in.Fh, in.NodeId, false); !st.Ok() {
		return st
	}
	return t.inner.Lseek(cancel, in, out)
}

func (t *translator) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if t.release(in) {
		t.inner.Release(cancel, in)
	}
}

func (t *translator) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if st := t.node(&in.NodeId); !st.Ok() {
		return st
	}
	if st := t.fh(&in.Fh, in.NodeId, false); !st.Ok() {
		return fuse.OK // nothing to flush on a read-only layer
	}
	return t.inner.Flush(cancel, in)
}

func (t *translator) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.OK // read-only
}

func (t *translator) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if st := t.node(&in.NodeId); !st.Ok() {
		return st
	}
	st := t.inner.OpenDir(cancel, in, out)
	out.Fh = t.tag(out.Fh)
	return st
}

func (t *translator) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if st := t.node(&in.NodeId); !st.Ok() {
		return st
	}
	if st := t.fh(&in.Fh, in.NodeId, true); !st.Ok() {
		return st
	}
	return t.inner.ReadDir(cancel, in, out)
}

// ReadDirPlus is never asked for (the capability is turned off): its
// entries carry node IDs that would need rewriting inside the buffer.
func (t *translator) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fuse.ENOSYS
}

func (t *translator) ReleaseDir(in *fuse.ReleaseIn) {
	if t.release(in) {
		t.inner.ReleaseDir(in)
	}
}

func (t *translator) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status { return fuse.OK }

func (t *translator) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	if st := t.node(&h.NodeId); !st.Ok() {
		return st
	}
	return t.inner.StatFs(cancel, h, out)
}

func (t *translator) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	if st := t.node(&in.NodeId); !st.Ok() {
		return st
	}
	if st := t.fh(&in.Fh, in.NodeId, false); !st.Ok() {
		in.Fh = 0
	}
	return t.inner.Statx(cancel, in, out)
}

// What a read-only layer refuses.

func (t *translator) SetAttr(<-chan struct{}, *fuse.SetAttrIn, *fuse.AttrOut) fuse.Status {
	return fuse.EROFS
}
func (t *translator) Mknod(<-chan struct{}, *fuse.MknodIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (t *translator) Mkdir(<-chan struct{}, *fuse.MkdirIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (t *translator) Unlink(<-chan struct{}, *fuse.InHeader, string) fuse.Status { return fuse.EROFS }
func (t *translator) Rmdir(<-chan struct{}, *fuse.InHeader, string) fuse.Status  { return fuse.EROFS }
func (t *translator) Rename(<-chan struct{}, *fuse.RenameIn, string, string) fuse.Status {
	return fuse.EROFS
}
func (t *translator) Link(<-chan struct{}, *fuse.LinkIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (t *translator) Symlink(<-chan struct{}, *fuse.InHeader, string, string, *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (t *translator) SetXAttr(<-chan struct{}, *fuse.SetXAttrIn, string, []byte) fuse.Status {
	return fuse.EROFS
}
func (t *translator) RemoveXAttr(<-chan struct{}, *fuse.InHeader, string) fuse.Status {
	return fuse.EROFS
}
func (t *translator) Create(<-chan struct{}, *fuse.CreateIn, string, *fuse.CreateOut) fuse.Status {
	return fuse.EROFS
}
func (t *translator) Write(<-chan struct{}, *fuse.WriteIn, []byte) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}
func (t *translator) CopyFileRange(<-chan struct{}, *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}
func (t *translator) Fallocate(<-chan struct{}, *fuse.FallocateIn) fuse.Status { return fuse.EROFS }
func (t *translator) Ioctl(<-chan struct{}, *fuse.IoctlIn, []byte, *fuse.IoctlOut, []byte) fuse.Status {
	return fuse.ENOSYS
}
func (t *translator) GetLk(<-chan struct{}, *fuse.LkIn, *fuse.LkOut) fuse.Status { return fuse.ENOSYS }
func (t *translator) SetLk(<-chan struct{}, *fuse.LkIn) fuse.Status              { return fuse.ENOSYS }
func (t *translator) SetLkw(<-chan struct{}, *fuse.LkIn) fuse.Status             { return fuse.ENOSYS }

var _ fuse.RawFileSystem = (*translator)(nil)
