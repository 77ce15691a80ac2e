package imagegen

import (
	"archive/tar"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

type rawEntry struct {
	hdr    *tar.Header
	layer  int
	format tar.Format
}

// readLayers reads every tar header of every layer back from the blobs.
func readLayers(t *testing.T, spec Spec) (map[string][]rawEntry, []types.MediaType) {
	t.Helper()
	img, err := Image(spec, WithCacheDir(t.TempDir()), WithBusybox(requireBusybox(t)))
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]rawEntry{}
	var mts []types.MediaType
	for i, l := range layers {
		mt, _ := l.MediaType()
		mts = append(mts, mt)
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			name := strings.TrimSuffix(h.Name, "/")
			out[name] = append(out[name], rawEntry{hdr: h, layer: i, format: h.Format})
		}
		rc.Close()
	}
	return out, mts
}

// TestEdgeCaseLayers reads the edge-case layers back and checks that each
// advertised corner case is really in the tars.
func TestEdgeCaseLayers(t *testing.T) {
	raw, mts := readLayers(t, EdgeCase())
	if len(mts) != 4 || mts[1] != types.OCILayer || mts[3] != types.OCIUncompressedLayer {
		t.Fatalf("layer media types %v", mts)
	}
	one := func(name string, layer int) *tar.Header {
		t.Helper()
		for _, e := range raw[name] {
			if e.layer == layer {
				return e.hdr
			}
		}
		t.Errorf("%s: not in layer %d", name, layer)
		return &tar.Header{}
	}
	// Symlinks of every flavour.
	for name, target := range map[string]string{
		"edge/links/abs": "/edge/links/target.txt", "edge/links/rel": "target.txt",
		"edge/links/dangling": "does-not-exist", "edge/links/to-dir": "../deep",
		"edge/links/long-target": EdgeLongTarget, "bin/sh": "busybox",
	} {
		layer := 1
		if name == "bin/sh" {
			layer = 0
		}
		if h := one(name, layer); h.Typeflag != tar.TypeSymlink || h.Linkname != target {
			t.Errorf("%s: type %q -> %q", name, h.Typeflag, h.Linkname)
		}
	}
	if len(EdgeLongTarget) <= 100 {
		t.Errorf("long symlink target is only %d bytes", len(EdgeLongTarget))
	}
	if h := one("edge/links/long-target", 1); h.Format != tar.FormatPAX {
		t.Errorf("long link target written as %v, want PAX", h.Format)
	}
	for _, name := range []string{"edge/links/hard", "edge/links/hard2"} {
		if h := one(name, 1); h.Typeflag != tar.TypeLink || h.Linkname != "edge/links/target.txt" {
			t.Errorf("%s: type %q -> %q", name, h.Typeflag, h.Linkname)
		}
	}
	// Whiteouts and opaque directories in layer 2.
	for _, name := range []string{"edge/whiteout/.wh.gone.txt", "edge/whiteout/.wh.gone-dir", "bin/.wh.wget", "edge/opaque/.wh..wh..opq"} {
		one(name, 2)
	}
	// A file replaced by a directory and vice versa.
	if h := one("edge/replace/file-to-dir", 1); h.Typeflag != tar.TypeReg {
		t.Errorf("file-to-dir in layer 1: %q", h.Typeflag)
	}
	if h := one("edge/replace/file-to-dir", 2); h.Typeflag != tar.TypeDir {
		t.Errorf("file-to-dir in layer 2: %q", h.Typeflag)
	}
	if h := one("edge/replace/dir-to-file", 1); h.Typeflag != tar.TypeDir {
		t.Errorf("dir-to-file in layer 1: %q", h.Typeflag)
	}
	if h := one("edge/replace/dir-to-file", 2); h.Typeflag != tar.TypeReg {
		t.Errorf("dir-to-file in layer 2: %q", h.Typeflag)
	}
	// Xattrs as PAX SCHILY.xattr records.
	if h := one("edge/xattr/user-xattr", 1); h.PAXRecords["SCHILY.xattr.user.comment"] != "hello xattr" {
		t.Errorf("user xattr: %v", h.PAXRecords)
	}
	if h := one("edge/xattr/capability", 1); h.PAXRecords["SCHILY.xattr.security.capability"] != capNetBindService() || len(capNetBindService()) != 20 {
		t.Errorf("capability xattr: %q", h.PAXRecords)
	}
	if h := one("edge/xattr/dir", 1); h.Typeflag != tar.TypeDir || h.PAXRecords["SCHILY.xattr.user.dir"] == "" {
		t.Errorf("dir xattr: %v", h.PAXRecords)
	}
	// Big and empty files.
	if h := one("edge/big/sparse-64m", 1); h.Size != EdgeSparseSize {
		t.Errorf("sparse file size %d", h.Size)
	}
	if h := one("edge/empty/zero", 1); h.Typeflag != tar.TypeReg || h.Size != 0 {
		t.Errorf("empty file: %q %d", h.Typeflag, h.Size)
	}
	// Long names: a >100-byte base name needs PAX; a deep path > 255 bytes.
	if h := one("edge/long/"+EdgeLongName, 1); h.Format != tar.FormatPAX || len(EdgeLongName) < 200 {
		t.Errorf("long name: format %v, %d bytes", h.Format, len(EdgeLongName))
	}
	if deep := EdgeDeepPath(); len(deep) <= 255 || strings.Count(deep, "/") < 40 {
		t.Errorf("deep path is %d bytes, %d levels", len(deep), strings.Count(deep, "/"))
	} else {
		one(deep, 1)
	}
	// Many small files.
	n := 0
	for name := range raw {
		if strings.HasPrefix(name, "edge/many/f") {
			n++
		}
	}
	if n != EdgeManyFiles || n < 1000 {
		t.Errorf("edge/many has %d files", n)
	}
	// Odd modes and owners.
	for name, mode := range map[string]int64{
		"edge/modes/setuid": 0o4755, "edge/modes/setgid": 0o2755, "edge/modes/sticky": 0o1777,
		"edge/modes/none": 0, "edge/modes/all": 0o777, "edge/modes/readonly": 0o444,
	} {
		if h := one(name, 1); h.Mode != mode {
			t.Errorf("%s: mode %o, want %o", name, h.Mode, mode)
		}
	}
	for name, ids := range map[string][2]int{
		"edge/owners/root": {0, 0}, "edge/owners/user": {1000, 1000},
		"edge/owners/nobody": {65534, 65534}, "edge/owners/mixed": {1000, 65534},
	} {
		if h := one(name, 1); h.Uid != ids[0] || h.Gid != ids[1] {
			t.Errorf("%s: %d:%d, want %v", name, h.Uid, h.Gid, ids)
		}
	}
	// Unicode names (PAX path records, since USTAR is ASCII-only).
	for _, name := range []string{"edge/unicode/héllo-wörld.txt", "edge/unicode/日本語.txt", "edge/unicode/emoji-🙂.txt", "edge/unicode/Ελληνικά"} {
		one(name, 1)
	}
	// A FIFO, and no device nodes (they would not unpack unprivileged).
	if h := one("edge/special/fifo", 1); h.Typeflag != tar.TypeFifo {
		t.Errorf("fifo: %q", h.Typeflag)
	}
	for name, es := range raw {
		for _, e := range es {
			if e.hdr.Typeflag == tar.TypeChar || e.hdr.Typeflag == tar.TypeBlock {
				t.Errorf("device node %s in layer %d", name, e.layer)
			}
			if !e.hdr.ModTime.Equal(Epoch) {
				t.Errorf("%s: mtime %v, want the fixed Epoch", name, e.hdr.ModTime)
			}
		}
	}
	one("edge/uncompressed/hello.txt", 3)
	one("edge/whiteout/gone.txt", 3)
}

// TestEdgeCaseTree checks Tree's merged view of the edge-case image at the
// paths each corner case affects.
func TestEdgeCaseTree(t *testing.T) {
	img, err := Image(EdgeCase(), WithCacheDir(t.TempDir()), WithBusybox(requireBusybox(t)))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	get := func(p string) FileInfo {
		t.Helper()
		fi, ok := tr[p]
		if !ok {
			t.Errorf("%s: missing from tree", p)
		}
		return fi
	}
	for _, gone := range []string{
		"bin/wget", "edge/whiteout/gone-dir", "edge/whiteout/gone-dir/a.txt", "edge/whiteout/gone-dir/b/c.txt",
		"edge/opaque/old1.txt", "edge/opaque/old2.txt", "edge/opaque/sub", "edge/opaque/sub/old3.txt",
		"edge/replace/dir-to-file/inner.txt",
	} {
		if _, ok := tr[gone]; ok {
			t.Errorf("%s: should be deleted", gone)
		}
	}
	for p := range tr {
		if strings.Contains(p, WhiteoutPrefix) {
			t.Errorf("%s: whiteout marker left in the tree", p)
		}
	}
	if fi := get("edge/whiteout/gone.txt"); fi.SHA256 != sha256hex("back again in layer 3\n") {
		t.Errorf("gone.txt re-added in layer 3: %+v", fi)
	}
	get("edge/whiteout/kept.txt")
	get("edge/opaque/new.txt")
	get("bin/sh")
	if fi := get("edge/replace/file-to-dir"); fi.Type != tar.TypeDir {
		t.Errorf("file-to-dir: %q", fi.Type)
	}
	get("edge/replace/file-to-dir/child.txt")
	if fi := get("edge/replace/dir-to-file"); fi.Type != tar.TypeReg {
		t.Errorf("dir-to-file: %q", fi.Type)
	}
	// Hard links keep the content they had when linked; the rewritten
	// target.txt is a new file in layer 2.
	old := sha256hex("hello from the target\n")
	if fi := get("edge/links/hard"); fi.Type != tar.TypeReg || fi.SHA256 != old || fi.HardLink != "edge/links/target.txt" {
		t.Errorf("hard link: %+v", fi)
	}
	if fi := get("edge/links/target.txt"); fi.SHA256 != sha256hex("the target, rewritten in layer 2\n") {
		t.Errorf("target.txt: %+v", fi)
	}
	if fi := get("edge/modes/chmod-later"); fi.Mode != 0o600 {
		t.Errorf("chmod-later: mode %o", fi.Mode)
	}
	if fi := get("edge/modes/setuid"); fi.Mode != 0o4755 {
		t.Errorf("setuid: mode %o", fi.Mode)
	}
	if fi := get("edge/owners/nobody"); fi.UID != 65534 || fi.GID != 65534 {
		t.Errorf("nobody: %d:%d", fi.UID, fi.GID)
	}
	if fi := get("edge/xattr/user-xattr"); fi.Xattrs["user.hermes"] != "1" {
		t.Errorf("xattrs: %v", fi.Xattrs)
	}
	if fi := get("edge/big/sparse-64m"); fi.Size != EdgeSparseSize {
		t.Errorf("sparse: %d bytes", fi.Size)
	}
	if fi := get("edge/links/dangling"); fi.Type != tar.TypeSymlink || fi.Linkname != "does-not-exist" {
		t.Errorf("dangling: %+v", fi)
	}
	if fi := get("edge/special/fifo"); fi.Type != tar.TypeFifo {
		t.Errorf("fifo: %+v", fi)
	}
	if fi := get("bin/busybox"); fi.Size < 100<<10 || fi.Mode != 0o755 {
		t.Errorf("busybox: %+v", fi)
	}
	get(EdgeDeepPath())
}
