package nodedisk

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Kind is a kind of state on disk; the values label metrics.
type Kind string

const (
	KindSpans     Kind = "spans"
	KindContent   Kind = "content"
	KindMetadata  Kind = "metadata"
	KindSnapshots Kind = "snapshots"
)

// Kinds lists every Kind.
var Kinds = []Kind{KindSpans, KindContent, KindMetadata, KindSnapshots}

// Layout names the places under a snapshotter root (see the package doc).
type Layout struct{ Root string }

// Content is soci's local content store.
func (l Layout) Content() string { return filepath.Join(l.Root, "content") }

// Blobs is the content store's sha256 blob directory.
func (l Layout) Blobs() string { return filepath.Join(l.Content(), "blobs", "sha256") }

// Ingest holds the content store's half-written blobs.
func (l Layout) Ingest() string { return filepath.Join(l.Content(), "ingest") }

// MetadataDB is soci's bbolt file-tree store ("db").
func (l Layout) MetadataDB() string { return filepath.Join(l.Root, "metadata.db") }

// MetadataDir holds soci's per-layer file-tree stores ("db-multi").
func (l Layout) MetadataDir() string { return filepath.Join(l.Root, "metadata") }

// FS is soci's filesystem root.
func (l Layout) FS() string { return filepath.Join(l.Root, "soci") }

// SpanCache holds one directory of fetched spans per resolved layer.
func (l Layout) SpanCache() string { return filepath.Join(l.FS(), "spancache") }

// Snapshots is soci's snapshotter root.
func (l Layout) Snapshots() string { return filepath.Join(l.Root, "snapshotter") }

func (l Layout) paths(k Kind) []string {
	switch k {
	case KindSpans:
		return []string{l.SpanCache()}
	case KindContent:
		return []string{l.Content()}
	case KindMetadata:
		return []string{l.MetadataDB(), l.MetadataDir()}
	case KindSnapshots:
		return []string{l.Snapshots()}
	}
	return nil
}

// Usage returns the bytes each kind takes on disk, counted as du counts
// them (allocated blocks, each inode once, not crossing mount points: a
// FUSE mount's files are not on this disk).
func (l Layout) Usage() map[Kind]int64 {
	seen := map[uint64]bool{}
	out := map[Kind]int64{}
	for _, k := range Kinds {
		for _, p := range l.paths(k) {
			out[k] += diskUsage(p, seen)
		}
	}
	return out
}

// Size is the bytes one kind takes on disk.
func (l Layout) Size(k Kind) int64 {
	var n int64
	for _, p := range l.paths(k) {
		n += diskUsage(p, map[uint64]bool{})
	}
	return n
}

// diskUsage sums the allocated bytes below path; files that vanish while
// it walks are skipped.
func diskUsage(path string, seen map[uint64]bool) int64 {
	root, err := os.Lstat(path)
	if err != nil {
		return 0
	}
	rootDev := devOf(root)
	var n int64
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
				return nil
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			n += fi.Size()
			return nil
		}
		if uint64(st.Dev) != rootDev {
			if d.IsDir() {
				return filepath.SkipDir // a mount point (FUSE, overlay)
			}
			return nil
		}
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		n += st.Blocks * 512
		return nil
	})
	return n
}

func devOf(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev)
	}
	return 0
}
