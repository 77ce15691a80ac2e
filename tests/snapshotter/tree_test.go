package snapshotter_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/opencontainers/image-spec/identity"
	"golang.org/x/sys/unix"

	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// node is what one path of a mounted tree looks like.
type fsEntry struct {
	Type   uint32 // S_IFMT bits
	Perm   uint32 // permission, setuid, setgid, sticky bits
	UID    uint32
	GID    uint32
	Size   int64 // regular files
	SHA256 string
	Link   string
	Rdev   uint64
	Xattrs map[string]string
}

func (e fsEntry) String() string {
	return fmt.Sprintf("type=%o perm=%04o owner=%d:%d size=%d sha256=%.12s link=%q rdev=%d xattrs=%v",
		e.Type, e.Perm, e.UID, e.GID, e.Size, e.SHA256, e.Link, e.Rdev, e.Xattrs)
}

// readTree walks a mounted root filesystem and reads every file.
func readTree(t *testing.T, root string) map[string]fsEntry {
	t.Helper()
	out := map[string]fsEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		e := fsEntry{Type: st.Mode & syscall.S_IFMT, Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}
		switch e.Type {
		case syscall.S_IFREG:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", rel, err)
			}
			e.Size, e.SHA256 = n, hex.EncodeToString(h.Sum(nil))
		case syscall.S_IFLNK:
			if e.Link, err = os.Readlink(p); err != nil {
				return err
			}
			e.Perm = 0 // symlink permissions mean nothing on Linux
		case syscall.S_IFCHR, syscall.S_IFBLK:
			e.Rdev = uint64(st.Rdev)
		}
		e.Xattrs = xattrs(t, p)
		out[filepath.ToSlash(rel)] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

// xattrs returns p's extended attributes, without the ones the mounting
// filesystem adds itself.
func xattrs(t *testing.T, p string) map[string]string {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return nil
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var m map[string]string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") || name == "security.selinux" {
			continue
		}
		v := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		if m == nil {
			m = map[string]string{}
		}
		m[name] = string(v[:n])
	}
	return m
}

// diffTrees lists every path where a and b differ.
func diffTrees(a, b map[string]fsEntry, aName, bName string) []string {
	var diffs []string
	for p, ea := range a {
		eb, ok := b[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: only in %s (%s)", p, aName, ea))
		case ea.String() != eb.String():
			diffs = append(diffs, fmt.Sprintf("%s:\n    %s: %s\n    %s: %s", p, aName, ea, bName, eb))
		}
	}
	for p, eb := range b {
		if _, ok := a[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only in %s (%s)", p, bName, eb))
		}
	}
	sort.Strings(diffs)
	return diffs
}

// mountImage mounts a read-only view of img's root filesystem from
// snapshotter sn and returns the directory; it is unmounted at test end.
func mountImage(t *testing.T, n *node, img containerd.Image, sn, key string) string {
	t.Helper()
	ctx := n.ctrd.Context(t)
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ss := n.ctrd.Client(t).SnapshotService(sn)
	mounts, err := ss.View(ctx, key, identity.ChainID(diffIDs).String())
	if err != nil {
		t.Fatalf("view %s on %s: %v", key, sn, err)
	}
	dir := harness.TempDir(t, "view")
	if err := mount.All(mounts, dir); err != nil {
		t.Fatalf("mount %s view: %v", sn, err)
	}
	t.Cleanup(func() {
		if err := mount.UnmountAll(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		_ = ss.Remove(ctx, key)
	})
	return dir
}

// TestTreeEquality: every path of imagegen's edge-case image, read through
// the lazy mounts, equals containerd's overlayfs extraction of the same image
// and imagegen's own merged tree: content hash, type, mode, owner, link
// target, xattrs, whiteouts and opaque directories applied.
func TestTreeEquality(t *testing.T) {
	n := startNode(t, nodeOptions{})
	im := pushImage(t, n, "edge", imagegen.EdgeCase())
	p := buildIndex(t, n.cache.Host, im)
	for _, l := range p.Layers {
		t.Logf("layer %s %s: %s %s", l.Digest.Hex()[:12], l.MediaType, l.State, l.Reason)
	}

	lazyImg, took := pull(t, n, im.ref, snName)
	t.Logf("lazy pull: %s, %d FUSE mounts", took, len(fuseMounts(t, n.sn.Root)))
	if len(fuseMounts(t, n.sn.Root)) == 0 {
		t.Fatal("no layer was mounted lazily")
	}
	overlayImg, took := pull(t, n, im.ref, "overlayfs")
	t.Logf("overlayfs pull: %s", took)

	lazyDir := mountImage(t, n, lazyImg, snName, "edge-lazy")
	lazy := readTree(t, lazyDir)
	overlay := readTree(t, mountImage(t, n, overlayImg, "overlayfs", "edge-overlay"))
	t.Logf("%d paths lazily, %d from overlayfs, %d in imagegen's tree", len(lazy), len(overlay), len(im.tree))

	// Directly against the overlayfs extraction: every attribute of every
	// path, including xattrs neither side was expected to have.
	if d := diffTrees(lazy, overlay, "lazy", "overlayfs"); len(d) > 0 {
		t.Errorf("%d paths differ between the lazy mounts and the overlayfs extraction:\n%s", len(d), strings.Join(d, "\n"))
	}
	// And against what the layers say the result must be.
	d, err := imagegen.CompareDir(lazyDir, im.tree, imagegen.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d) > 0 {
		t.Errorf("%d differences between the lazy mounts and imagegen's tree:\n%s", len(d), strings.Join(d, "\n"))
	}
	// Spot checks, so that an empty comparison cannot pass by accident.
	if e := lazy["edge/xattr/user-xattr"]; e.Xattrs["user.hermes"] != "1" {
		t.Errorf("user xattr lost: %s", e)
	}
	if e := lazy["edge/xattr/capability"]; e.Xattrs["security.capability"] == "" {
		t.Errorf("file capability lost: %s", e)
	}
	if e := lazy["edge/modes/setuid"]; e.Perm != 0o4755 {
		t.Errorf("setuid bit lost: %s", e)
	}
	if e := lazy["edge/owners/mixed"]; e.UID != 1000 || e.GID != 65534 {
		t.Errorf("owner lost: %s", e)
	}
	if e := lazy["edge/links/hard"]; e.SHA256 != sha256Hex([]byte("hello from the target\n")) {
		t.Errorf("hard link content: %s", e)
	}
	for _, gone := range []string{"edge/whiteout/gone-dir", "edge/opaque/old1.txt", "edge/opaque/sub", "bin/wget", "edge/replace/dir-to-file/inner.txt"} {
		if _, ok := lazy[gone]; ok {
			t.Errorf("%s was deleted by a whiteout or an opaque directory but is visible lazily", gone)
		}
	}
}
