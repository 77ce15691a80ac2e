package memmeta

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/awslabs/soci-snapshotter/metadata"
	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	bolt "go.etcd.io/bbolt"

	"github.com/hermes-oci/hermes/controller/builder/gzindex"
)

// sociStore is soci's own bbolt store, the reference every tree here must
// match.
func sociStore(tb testing.TB) metadata.Store {
	tb.Helper()
	db, err := bolt.Open(filepath.Join(tb.TempDir(), "metadata.db"), 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return func(sr *io.SectionReader, toc ztoc.TOC, opts ...metadata.Option) (metadata.Reader, error) {
		return metadata.NewReader(db, sr, toc, opts...)
	}
}

func noFallback(*io.SectionReader, ztoc.TOC, ...metadata.Option) (metadata.Reader, error) {
	return nil, errors.New("fallback used")
}

var mtime = time.Unix(1_700_000_000, 123456789)

func reg(name string, size int, off int64) ztoc.FileMetadata {
	return ztoc.FileMetadata{Name: name, Type: "reg", Mode: 0o644, UncompressedSize: ztocOffset(size), UncompressedOffset: ztocOffset(int(off)), TarHeaderOffset: ztocOffset(int(off) - 512), ModTime: mtime, UID: 1000, GID: 1000}
}

func ztocOffset(n int) compression.Offset { return compression.Offset(n) }

func dir(name string, mode int64, uid int) ztoc.FileMetadata {
	return ztoc.FileMetadata{Name: name, Type: "dir", Mode: mode, UID: uid, GID: uid, ModTime: mtime}
}

// edgeTOC has the entries whose handling differs between stores if
// anything does: implied and repeated directories, the root named "./",
// hard links (chained, and to a name replaced later), replaced names,
// whiteouts, devices, xattrs, symlinks and non-ASCII names.
func edgeTOC() ztoc.TOC {
	xattr := func(e ztoc.FileMetadata, kv map[string]string) ztoc.FileMetadata {
		e.PAXHeaders = map[string]string{}
		for k, v := range kv {
			e.PAXHeaders["SCHILY.xattr."+k] = v
		}
		return e
	}
	return ztoc.TOC{FileMetadata: []ztoc.FileMetadata{
		dir("./", 0o755, 0),
		reg("usr/lib/deep/a.so", 4096, 1024), // implies usr, usr/lib, usr/lib/deep
		dir("usr/", 0o700, 5),                // names an implied directory
		dir("usr/lib/", 0o750, 0),            // uid 0 keeps the earlier zero
		dir("usr/", 0o711, 0),                // repeated
		{Name: "usr/lib/deep/b.so", Type: "hardlink", Linkname: "usr/lib/deep/a.so"},
		{Name: "usr/lib/c.so", Type: "hardlink", Linkname: "usr/lib/deep/b.so"}, // link to a link
		{Name: "usr/bin/sh", Type: "symlink", Linkname: "/bin/busybox", Mode: 0o777, ModTime: mtime},
		reg("etc/passwd", 100, 8192),
		reg("etc/passwd", 120, 9216), // replaced: the later entry wins
		reg("etc/hosts", 0, 10240),
		dir("etc/hosts", 0o755, 0), // a directory over a file of the same name
		reg("etc/hosts/x", 1, 11264),
		xattr(reg("bin/ping", 64_000, 12288), map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00", "user.note": "hi"}),
		xattr(dir("opt/", 0o755, 0), map[string]string{"trusted.overlay.opaque": "y"}),
		reg("opt/.wh..wh..opq", 0, 77000),
		reg("var/.wh.cache", 0, 78000),
		{Name: "dev/null", Type: "char", Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "dev/sda", Type: "block", Mode: 0o660, Devmajor: 8, Devminor: 0, GID: 6},
		{Name: "run/fifo", Type: "fifo", Mode: 0o600},
		reg("données/été ☃.txt", 7, 80000),
		reg(strings.Repeat("long-directory-name/", 12)+"leaf", 3, 81000),
		reg("./dot/slash", 2, 82000),
		reg("/abs/path", 2, 83000),
		dir("trailing//", 0o755, 0),
	}}
}

// tarTOC is the TOC our builder records for a tar written by archive/tar.
func tarTOC(t *testing.T) ztoc.TOC {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		h.ModTime = mtime
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, body)
	}
	add(&tar.Header{Name: "app/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "app/main", Typeflag: tar.TypeReg, Mode: 0o755, Uid: 10, Gid: 20}, "#!/bin/sh\necho hi\n")
	add(&tar.Header{Name: "app/link", Typeflag: tar.TypeLink, Linkname: "app/main"}, "")
	add(&tar.Header{Name: "app/sym", Typeflag: tar.TypeSymlink, Linkname: "main"}, "")
	add(&tar.Header{Name: "app/x", Typeflag: tar.TypeReg, Mode: 0o600, PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}}, "data")
	add(&tar.Header{Name: "lib/implied/deep.txt", Typeflag: tar.TypeReg, Mode: 0o644}, strings.Repeat("z", 3000))
	tw.Close()
	md, _, err := gzindex.TarMetadata(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return ztoc.TOC{FileMetadata: md}
}

// wideTOC is a layer of n files in directories of 100, with the
// directory entries after their files half of the time.
func wideTOC(n int) ztoc.TOC {
	var toc ztoc.TOC
	off := int64(512)
	for d := 0; len(toc.FileMetadata) < n; d++ {
		dname := fmt.Sprintf("srv/pkg%04d/", d)
		if d%2 == 0 {
			toc.FileMetadata = append(toc.FileMetadata, dir(dname, 0o755, 0))
		}
		for f := 0; f < 100 && len(toc.FileMetadata) < n; f++ {
			toc.FileMetadata = append(toc.FileMetadata, reg(fmt.Sprintf("%smodule_%03d.py", dname, f), 2000, off))
			off += 2560
		}
		if d%2 == 1 {
			toc.FileMetadata = append(toc.FileMetadata, dir(dname, 0o755, 0))
		}
	}
	return toc
}

// compare walks both trees from the root and fails on the first of any
// difference in IDs, attributes, children or file offsets.
func compare(t *testing.T, want, got metadata.Reader) {
	t.Helper()
	if want.RootID() != got.RootID() {
		t.Fatalf("root ID: soci %d, memmeta %d", want.RootID(), got.RootID())
	}
	seen := map[uint32]bool{}
	var walk func(path string, id uint32)
	walk = func(path string, id uint32) {
		wa, err1 := want.GetAttr(id)
		ga, err2 := got.GetAttr(id)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("%s: GetAttr errors differ: soci %v, memmeta %v", path, err1, err2)
		}
		sameAttr(t, path, wa, ga)
		if wa.Mode.IsRegular() {
			wf, err1 := want.OpenFile(id)
			gf, err2 := got.OpenFile(id)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s: OpenFile: soci %v, memmeta %v", path, err1, err2)
			}
			if wf.TarName() != gf.TarName() || wf.GetUncompressedOffset() != gf.GetUncompressedOffset() ||
				wf.GetUncompressedFileSize() != gf.GetUncompressedFileSize() || wf.TarHeaderOffset() != gf.TarHeaderOffset() ||
				wf.TarHeaderSize() != gf.TarHeaderSize() {
				t.Fatalf("%s: file differs: soci %+v, memmeta %+v", path, wf, gf)
			}
		} else if _, err := got.OpenFile(id); err == nil {
			t.Fatalf("%s: memmeta opens a %s", path, ga.Mode.Type())
		}
		if seen[id] {
			return // a hard link, or "." at the root
		}
		seen[id] = true
		wc, gc := children(t, want, id), children(t, got, id)
		if !maps.Equal(wc, gc) {
			t.Fatalf("%s: children differ:\nsoci    %v\nmemmeta %v", path, wc, gc)
		}
		for name, cid := range wc {
			_, wa, err1 := want.GetChild(id, name)
			gid, ga, err2 := got.GetChild(id, name)
			if err1 != nil || err2 != nil || gid != cid {
				t.Fatalf("%s/%s: GetChild: soci %v, memmeta %d %v", path, name, err1, gid, err2)
			}
			sameAttr(t, path+"/"+name, wa, ga)
			walk(path+"/"+name, cid)
		}
		if _, _, err := got.GetChild(id, "no such name"); err == nil {
			t.Fatalf("%s: memmeta finds a missing child", path)
		}
	}
	walk("", want.RootID())
}

func children(t *testing.T, r metadata.Reader, id uint32) map[string]uint32 {
	m := map[string]uint32{}
	if err := r.ForeachChild(id, func(name string, cid uint32, mode os.FileMode) bool {
		a, err := r.GetAttr(cid)
		if err != nil || a.Mode != mode {
			t.Fatalf("ForeachChild(%d) %q: mode %v, GetAttr %v %v", id, name, mode, a.Mode, err)
		}
		m[name] = cid
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

func sameAttr(t *testing.T, path string, w, g metadata.Attr) {
	t.Helper()
	if w.Size != g.Size || !w.ModTime.Equal(g.ModTime) || w.LinkName != g.LinkName || w.Mode != g.Mode ||
		w.UID != g.UID || w.GID != g.GID || w.DevMajor != g.DevMajor || w.DevMinor != g.DevMinor || w.NumLink != g.NumLink ||
		!maps.EqualFunc(w.Xattrs, g.Xattrs, bytes.Equal) {
		t.Fatalf("%s: attributes differ:\nsoci    %+v\nmemmeta %+v", path, w, g)
	}
}

func TestSameTreeAsSoci(t *testing.T) {
	for name, toc := range map[string]func() ztoc.TOC{
		"edge cases": edgeTOC,
		"tar":        func() ztoc.TOC { return tarTOC(t) },
		"wide":       func() ztoc.TOC { return wideTOC(2500) },
		"empty":      func() ztoc.TOC { return ztoc.TOC{} },
	} {
		t.Run(name, func(t *testing.T) {
			sr := io.NewSectionReader(bytes.NewReader(nil), 0, 0)
			want, err := sociStore(t)(sr, toc())
			if err != nil {
				t.Fatal(err)
			}
			s := New(1<<20, noFallback)
			got, err := s.NewReader(sr, toc())
			if err != nil {
				t.Fatal(err)
			}
			compare(t, want, got)
		})
	}
}

func TestHardLinkWithoutTarget(t *testing.T) {
	toc := ztoc.TOC{FileMetadata: []ztoc.FileMetadata{{Name: "a", Type: "hardlink", Linkname: "missing"}}}
	sr := io.NewSectionReader(bytes.NewReader(nil), 0, 0)
	if _, err := sociStore(t)(sr, toc); err == nil {
		t.Fatal("soci accepts a hard link without target; this test's premise is wrong")
	}
	s := New(100, noFallback)
	_, err := s.NewReader(sr, toc)
	if err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Fatalf("want an error naming the missing target, got %v", err)
	}
	if s.Entries() != 0 {
		t.Fatalf("a failed layer holds %d entries of the budget", s.Entries())
	}
}

func TestBudget(t *testing.T) {
	var fellBack int
	fallback := func(sr *io.SectionReader, toc ztoc.TOC, opts ...metadata.Option) (metadata.Reader, error) {
		fellBack++
		return New(1<<30, noFallback).NewReader(sr, toc, opts...)
	}
	sr := io.NewSectionReader(bytes.NewReader(nil), 0, 0)
	s := New(250, fallback)
	toc := wideTOC(100) // srv/ implied, srv/pkg0000/ and 99 files: 101 entries and the root
	a, err := s.NewReader(sr, toc)
	if err != nil {
		t.Fatal(err)
	}
	if s.Entries() != 102 || fellBack != 0 {
		t.Fatalf("after one layer: %d entries in memory, %d fallbacks; want 102, 0", s.Entries(), fellBack)
	}
	b, _ := s.NewReader(sr, toc)
	c, _ := s.NewReader(sr, toc) // 204 + 101 reserved > 250
	if s.Entries() != 204 || fellBack != 1 {
		t.Fatalf("after three layers: %d entries in memory, %d fallbacks; want 204, 1", s.Entries(), fellBack)
	}
	clone, _ := a.Clone(sr)
	clone.Close()
	if s.Entries() != 204 {
		t.Fatalf("closing a clone returned entries: %d", s.Entries())
	}
	a.Close()
	a.Close()
	if s.Entries() != 102 {
		t.Fatalf("after closing a layer twice: %d entries, want 102", s.Entries())
	}
	b.Close()
	c.Close()
	if s.Entries() != 0 {
		t.Fatalf("after closing every layer: %d entries, want 0", s.Entries())
	}
	if _, err := New(0, fallback).NewReader(sr, toc); err != nil || fellBack != 2 {
		t.Fatalf("budget 0: err %v, %d fallbacks", err, fellBack)
	}
}

func TestTelemetry(t *testing.T) {
	var called bool
	tel := &metadata.Telemetry{InitMetadataStoreLatency: func(time.Time) { called = true }}
	if _, err := New(1000, noFallback).NewReader(io.NewSectionReader(bytes.NewReader(nil), 0, 0), wideTOC(10), metadata.WithTelemetry(tel)); err != nil {
		t.Fatal(err)
	}
	if !called {
		t.Fatal("init latency not reported to soci's telemetry")
	}
}

// BenchmarkNewReader builds the tree of a 12,500-file and a 67,000-file
// layer (the sizes of the bench's C layers and of the largest layer
// measured for soci) in memory and in soci's bbolt store, and reports the
// heap each in-memory entry holds.
func BenchmarkNewReader(b *testing.B) {
	for _, n := range []int{12_500, 67_000} {
		toc := wideTOC(n)
		sr := io.NewSectionReader(bytes.NewReader(nil), 0, 0)
		b.Run(fmt.Sprintf("memory/%d", n), func(b *testing.B) {
			s := New(1<<40, noFallback)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var keep []metadata.Reader
			for b.Loop() {
				r, err := s.NewReader(sr, toc)
				if err != nil {
					b.Fatal(err)
				}
				keep = append(keep, r)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(s.Entries()), "heapB/entry")
			runtime.KeepAlive(keep)
		})
		b.Run(fmt.Sprintf("soci-bbolt/%d", n), func(b *testing.B) {
			st := sociStore(b)
			for b.Loop() {
				r, err := st(sr, toc)
				if err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
