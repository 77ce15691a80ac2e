package imagegen

import (
	"archive/tar"
	"encoding/binary"
	"fmt"
	"strings"
)

// Sizes used by the edge-case set.
const (
	EdgeSparseSize = 64 << 20 // edge/big/sparse-64m
	EdgeManyFiles  = 2500     // files in edge/many
)

// EdgeCase returns the edge-case Spec: Debian's busybox at the bottom, then
// three layers of tar corner cases, all under /edge unless noted:
//
//	layer 1 (gzip), the base:
//	  links/   target.txt, abs -> /edge/links/target.txt, rel -> target.txt,
//	           up -> ../modes/setuid, dangling -> does-not-exist,
//	           to-dir -> ../deep, hard and hard2 (hard links to target.txt),
//	           long-target -> a >100-byte relative target (PAX linkpath)
//	  modes/   setuid 4755, setgid 2755, sticky/ 1777, none 0000, all 0777,
//	           readonly 0444, chmod-later 0644
//	  owners/  root 0:0, user 1000:1000, nobody 65534:65534, mixed 1000:65534,
//	           userdir/ 1000:1000
//	  xattr/   user-xattr (user.comment, user.hermes), capability
//	           (security.capability, cap_net_bind_service), dir/ (user.dir)
//	  big/     sparse-64m (64 MiB, 4 KiB of data per MiB), zeros-1m
//	  empty/   zero (0 bytes), dir/ (empty directory)
//	  long/    a 200-byte file name (PAX path)
//	  deep/    d00/d01/.../d39/leaf.txt (a path > 255 bytes)
//	  many/    EdgeManyFiles small files
//	  unicode/ héllo-wörld.txt, 日本語.txt, emoji-🙂.txt, Ελληνικά/
//	  special/ fifo (a named pipe; no device nodes, so the set unpacks
//	           unprivileged and under overlayfs)
//	  replace/ file-to-dir (a file), dir-to-file/inner.txt (a directory)
//	  whiteout/ gone.txt, gone-dir/{a,b/c}.txt, kept.txt
//	  opaque/  old1.txt, old2.txt, sub/old3.txt
//	layer 2 (gzip), changes:
//	  whiteout/.wh.gone.txt, whiteout/.wh.gone-dir, /bin/.wh.wget (a file of
//	  the busybox layer), opaque/.wh..wh..opq with opaque/new.txt,
//	  replace/file-to-dir/child.txt (now a directory), replace/dir-to-file
//	  (now a file), modes/chmod-later (mode 0600, same content),
//	  links/target.txt rewritten (hard and hard2 keep the old content)
//	layer 3 (plain tar, uncompressed media type):
//	  whiteout/gone.txt again with new content, uncompressed/hello.txt
//
// Tree(image) reports the expected merged result; the tests check it.
func EdgeCase() Spec {
	return Spec{
		Layers: []Layer{
			{Kind: Busybox},
			{Kind: Files, Entries: edgeBase()},
			{Kind: Files, Entries: edgeChanges()},
			{Kind: Files, Entries: edgeUncompressed(), Uncompressed: true},
		},
		Cmd: []string{"/bin/sh"},
	}
}

func dirE(name string, mode int64) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: mode} }

func fileE(name, content string) Entry {
	return Entry{Name: name, Mode: 0o644, Content: []byte(content)}
}

func symE(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
}

// capNetBindService is a vfs_cap_data revision 2 value granting
// cap_net_bind_service (bit 10) permitted and effective: the kernel rejects
// malformed security.capability values, so it must be well formed.
func capNetBindService() string {
	var b [20]byte
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1) // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	binary.LittleEndian.PutUint32(b[4:], 1<<10)          // permitted, low word
	return string(b[:])
}

// EdgeLongName is the 200-byte file name in edge/long.
var EdgeLongName = strings.Repeat("long-name-", 20)

// EdgeDeepPath is the leaf of edge/deep (over 255 bytes).
func EdgeDeepPath() string {
	var b strings.Builder
	b.WriteString("edge/deep")
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&b, "/d%02d-deeper", i)
	}
	return b.String() + "/leaf.txt"
}

// EdgeLongTarget is the symlink target of edge/links/long-target.
var EdgeLongTarget = "../" + strings.Repeat("x", 60) + "/" + strings.Repeat("y", 60) + "/nowhere"

func edgeBase() []Entry {
	e := []Entry{
		dirE("edge", 0o755),

		dirE("edge/links", 0o755),
		fileE("edge/links/target.txt", "hello from the target\n"),
		symE("edge/links/abs", "/edge/links/target.txt"),
		symE("edge/links/rel", "target.txt"),
		symE("edge/links/up", "../modes/setuid"),
		symE("edge/links/dangling", "does-not-exist"),
		symE("edge/links/to-dir", "../deep"),
		{Name: "edge/links/hard", Type: tar.TypeLink, Linkname: "edge/links/target.txt"},
		{Name: "edge/links/hard2", Type: tar.TypeLink, Linkname: "edge/links/target.txt"},
		symE("edge/links/long-target", EdgeLongTarget),

		dirE("edge/modes", 0o755),
		{Name: "edge/modes/setuid", Mode: 0o4755, Content: []byte("#!/bin/sh\necho setuid\n")},
		{Name: "edge/modes/setgid", Mode: 0o2755, Content: []byte("#!/bin/sh\necho setgid\n")},
		dirE("edge/modes/sticky", 0o1777),
		{Name: "edge/modes/none", Mode: 0, Content: []byte("no permissions\n")},
		{Name: "edge/modes/all", Mode: 0o777, Content: []byte("all permissions\n")},
		{Name: "edge/modes/readonly", Mode: 0o444, Content: []byte("read only\n")},
		fileE("edge/modes/chmod-later", "mode changes in layer 2\n"),

		dirE("edge/owners", 0o755),
		{Name: "edge/owners/root", Mode: 0o644, Content: []byte("root\n")},
		{Name: "edge/owners/user", Mode: 0o644, UID: 1000, GID: 1000, Content: []byte("user\n")},
		{Name: "edge/owners/nobody", Mode: 0o644, UID: 65534, GID: 65534, Content: []byte("nobody\n")},
		{Name: "edge/owners/mixed", Mode: 0o640, UID: 1000, GID: 65534, Content: []byte("mixed\n")},
		{Name: "edge/owners/userdir", Type: tar.TypeDir, Mode: 0o750, UID: 1000, GID: 1000},

		dirE("edge/xattr", 0o755),
		{Name: "edge/xattr/user-xattr", Mode: 0o644, Content: []byte("has user xattrs\n"),
			Xattrs: map[string]string{"user.comment": "hello xattr", "user.hermes": "1"}},
		{Name: "edge/xattr/capability", Mode: 0o755, Content: []byte("#!/bin/sh\necho cap\n"),
			Xattrs: map[string]string{"security.capability": capNetBindService()}},
		{Name: "edge/xattr/dir", Type: tar.TypeDir, Mode: 0o755, Xattrs: map[string]string{"user.dir": "a directory"}},

		dirE("edge/big", 0o755),
		{Name: "edge/big/sparse-64m", Mode: 0o644, Size: EdgeSparseSize, Fill: FillSparse, Seed: 64},
		{Name: "edge/big/zeros-1m", Mode: 0o644, Size: 1 << 20, Fill: FillZero},

		dirE("edge/empty", 0o755),
		{Name: "edge/empty/zero", Mode: 0o644, Content: []byte{}},
		dirE("edge/empty/dir", 0o755),

		dirE("edge/long", 0o755),
		fileE("edge/long/"+EdgeLongName, "a 200-byte name\n"),
	}
	deep := EdgeDeepPath()
	for i := len("edge/deep"); i < len(deep); i++ {
		if deep[i] == '/' {
			e = append(e, dirE(deep[:i], 0o755))
		}
	}
	e = append(e, fileE(deep, "deep leaf\n"))

	e = append(e, dirE("edge/many", 0o755))
	for i := 0; i < EdgeManyFiles; i++ {
		e = append(e, fileE(fmt.Sprintf("edge/many/f%05d", i), fmt.Sprintf("%d\n", i)))
	}
	e = append(e,
		dirE("edge/unicode", 0o755),
		fileE("edge/unicode/héllo-wörld.txt", "accents\n"),
		fileE("edge/unicode/日本語.txt", "japanese\n"),
		fileE("edge/unicode/emoji-🙂.txt", "emoji\n"),
		dirE("edge/unicode/Ελληνικά", 0o755),

		dirE("edge/special", 0o755),
		Entry{Name: "edge/special/fifo", Type: tar.TypeFifo, Mode: 0o644},

		dirE("edge/replace", 0o755),
		fileE("edge/replace/file-to-dir", "I become a directory\n"),
		dirE("edge/replace/dir-to-file", 0o755),
		fileE("edge/replace/dir-to-file/inner.txt", "I disappear\n"),

		dirE("edge/whiteout", 0o755),
		fileE("edge/whiteout/gone.txt", "deleted in layer 2\n"),
		dirE("edge/whiteout/gone-dir", 0o755),
		fileE("edge/whiteout/gone-dir/a.txt", "a\n"),
		dirE("edge/whiteout/gone-dir/b", 0o755),
		fileE("edge/whiteout/gone-dir/b/c.txt", "c\n"),
		fileE("edge/whiteout/kept.txt", "kept\n"),

		dirE("edge/opaque", 0o755),
		fileE("edge/opaque/old1.txt", "old1\n"),
		fileE("edge/opaque/old2.txt", "old2\n"),
		dirE("edge/opaque/sub", 0o755),
		fileE("edge/opaque/sub/old3.txt", "old3\n"),
	)
	return e
}

func edgeChanges() []Entry {
	return []Entry{
		dirE("bin", 0o755),
		fileE("bin/"+WhiteoutPrefix+"wget", ""),
		dirE("edge", 0o755),
		dirE("edge/links", 0o755),
		fileE("edge/links/target.txt", "the target, rewritten in layer 2\n"),
		dirE("edge/modes", 0o755),
		{Name: "edge/modes/chmod-later", Mode: 0o600, Content: []byte("mode changes in layer 2\n")},
		dirE("edge/opaque", 0o755),
		fileE("edge/opaque/"+OpaqueMarker, ""),
		fileE("edge/opaque/new.txt", "new in layer 2\n"),
		dirE("edge/replace", 0o755),
		fileE("edge/replace/dir-to-file", "I was a directory\n"),
		dirE("edge/replace/file-to-dir", 0o755),
		fileE("edge/replace/file-to-dir/child.txt", "I was a file\n"),
		dirE("edge/whiteout", 0o755),
		fileE("edge/whiteout/"+WhiteoutPrefix+"gone-dir", ""),
		fileE("edge/whiteout/"+WhiteoutPrefix+"gone.txt", ""),
	}
}

func edgeUncompressed() []Entry {
	return []Entry{
		dirE("edge", 0o755),
		dirE("edge/uncompressed", 0o755),
		fileE("edge/uncompressed/hello.txt", "from a plain tar layer\n"),
		dirE("edge/whiteout", 0o755),
		fileE("edge/whiteout/gone.txt", "back again in layer 3\n"),
	}
}
