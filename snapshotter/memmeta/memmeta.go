package memmeta

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/awslabs/soci-snapshotter/metadata"
	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
)

// Store hands soci an in-memory tree for every layer that fits in the
// budget, and the fallback store's reader for the others.
type Store struct {
	budget   int64
	used     atomic.Int64
	fallback metadata.Store

	// OnFallback, if set before first use, is told of every layer sent to
	// the fallback store because its entries do not fit in the budget.
	OnFallback func(layerEntries, used, budget int64)
}

// New returns a Store that keeps up to budget entries in memory over all
// open layers. fallback serves the layers that do not fit; budget 0 sends
// every layer there.
func New(budget int64, fallback metadata.Store) *Store {
	return &Store{budget: budget, fallback: fallback}
}

// Entries is how many tree entries the open in-memory layers hold.
func (s *Store) Entries() int64 { return s.used.Load() }

// Budget is the most entries the store keeps in memory.
func (s *Store) Budget() int64 { return s.budget }

// NewReader is a metadata.Store.
func (s *Store) NewReader(sr *io.SectionReader, toc ztoc.TOC, opts ...metadata.Option) (metadata.Reader, error) {
	// The tree has at most one entry per TOC entry, plus the root and the
	// directories no entry names; reserve for the first two and settle
	// once the tree is built.
	want := int64(len(toc.FileMetadata)) + 1
	if !s.reserve(want) {
		if s.OnFallback != nil && s.budget > 0 {
			s.OnFallback(want, s.used.Load(), s.budget)
		}
		return s.fallback(sr, toc, opts...)
	}
	var o metadata.Options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			s.used.Add(-want)
			return nil, fmt.Errorf("failed to apply option: %w", err)
		}
	}
	start := time.Now()
	t, err := build(toc)
	if err != nil {
		s.used.Add(-want)
		return nil, err
	}
	// Directories implied only by their contents may take the tree past the
	// reservation; such a layer stays in memory rather than being built
	// twice.
	s.used.Add(t.entries() - want)
	if o.Telemetry != nil && o.Telemetry.InitMetadataStoreLatency != nil {
		o.Telemetry.InitMetadataStoreLatency(start)
	}
	return &reader{tree: t, sr: sr, release: func() { s.used.Add(-t.entries()) }}, nil
}

func (s *Store) reserve(n int64) bool {
	for {
		used := s.used.Load()
		if used+n > s.budget {
			return false
		}
		if s.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// node is one entry of the tree. IDs index tree.nodes; 0 is unused, as in
// soci, where the first ID handed out is 1 and goes to the root.
type node struct {
	attr     metadata.Attr
	children map[string]uint32 // set once the node has a child
	file     fileEntry         // where the entry's data is in the layer; zero for implied directories
}

type fileEntry struct {
	tarName            string
	uncompressedOffset compression.Offset
	tarHeaderOffset    compression.Offset
	tarHeaderSize      compression.Offset
}

type tree struct {
	nodes []node
}

const rootID = 1

func (t *tree) entries() int64 { return int64(len(t.nodes) - 1) }

func (t *tree) newNode(attr metadata.Attr) uint32 {
	t.nodes = append(t.nodes, node{attr: attr})
	return uint32(len(t.nodes) - 1)
}

// build turns a TOC into a tree, entry by entry in TOC order, with soci's
// rules: a hard link adds a name and a link to its target; a directory
// entry updates a directory that its contents already implied; any other
// entry is a new node that takes its name over from an earlier one;
// directories named by no entry are created 0755; every directory child
// adds a link to its parent.
func build(toc ztoc.TOC) (*tree, error) {
	t := &tree{nodes: make([]node, 2, len(toc.FileMetadata)+2)}
	t.nodes[rootID].attr = metadata.Attr{Mode: os.ModeDir | 0o755, NumLink: 2}
	for i := range toc.FileMetadata {
		ent := &toc.FileMetadata[i]
		name := cleanEntryPath(ent.Name)
		isLink, isDir := ent.Type == "hardlink", ent.Type == "dir"
		var id uint32
		switch {
		case isLink:
			target, err := t.lookup(cleanEntryPath(ent.Linkname))
			if err != nil {
				return nil, fmt.Errorf("hard link %q to %q: cannot find its target: %w", ent.Name, ent.Linkname, err)
			}
			id = target
			t.nodes[id].attr.NumLink++
		default:
			existing, err := uint32(0), os.ErrNotExist
			if isDir {
				existing, err = t.lookup(name)
			}
			if err == nil {
				// soci writes only the non-zero fields over the node.
				id = existing
				mergeAttr(&t.nodes[id].attr, attrOf(ent))
			} else {
				attr := attrOf(ent)
				attr.NumLink = 1 // the parent's entry
				if isDir {
					attr.NumLink++ // "."
				}
				id = t.newNode(attr)
			}
		}
		parent := t.dir(parentDir(name))
		t.setChild(parent, filepath.Base(name), id, isDir)
		if !isLink {
			t.nodes[id].file = fileEntry{
				tarName:            ent.Name,
				uncompressedOffset: ent.UncompressedOffset,
				tarHeaderOffset:    ent.TarHeaderOffset,
				tarHeaderSize:      ent.UncompressedOffset - ent.TarHeaderOffset,
			}
		}
	}
	return t, nil
}

// lookup finds a cleaned path by walking names from the root.
func (t *tree) lookup(path string) (uint32, error) {
	id := uint32(rootID)
	if path == "" {
		return id, nil
	}
	for _, base := range strings.Split(path, "/") {
		c, ok := t.nodes[id].children[base]
		if !ok {
			return 0, fmt.Errorf("%q: %w", path, os.ErrNotExist)
		}
		id = c
	}
	return id, nil
}

// dir returns the directory at path, creating it and its missing parents.
func (t *tree) dir(path string) uint32 {
	path = cleanEntryPath(path)
	if id, err := t.lookup(path); err == nil {
		return id
	}
	id := t.newNode(metadata.Attr{Mode: os.ModeDir | 0o755, NumLink: 2})
	parent := t.dir(parentDir(path))
	t.setChild(parent, filepath.Base(path), id, true)
	return id
}

func (t *tree) setChild(parent uint32, base string, id uint32, isDir bool) {
	p := &t.nodes[parent]
	if p.children == nil {
		p.children = make(map[string]uint32)
	}
	p.children[base] = id
	if isDir {
		p.attr.NumLink++ // the child's ".."
	}
}

func attrOf(ent *ztoc.FileMetadata) metadata.Attr {
	a := metadata.Attr{
		Size:     int64(ent.UncompressedSize),
		ModTime:  ent.ModTime,
		LinkName: ent.Linkname,
		Mode:     ent.FileMode(),
		UID:      ent.UID,
		GID:      ent.GID,
		DevMajor: int(ent.Devmajor),
		DevMinor: int(ent.Devminor),
	}
	if x := ent.Xattrs(); len(x) > 0 {
		a.Xattrs = make(map[string][]byte, len(x))
		for k, v := range x {
			a.Xattrs[k] = []byte(v)
		}
	}
	return a
}

// mergeAttr writes src's non-zero fields over dst, keeping dst's link
// count, as soci's store does when a directory entry names a node that
// exists.
func mergeAttr(dst *metadata.Attr, src metadata.Attr) {
	if src.Size != 0 {
		dst.Size = src.Size
	}
	if !src.ModTime.IsZero() {
		dst.ModTime = src.ModTime
	}
	if src.LinkName != "" {
		dst.LinkName = src.LinkName
	}
	if src.Mode != 0 {
		dst.Mode = src.Mode
	}
	if src.UID != 0 {
		dst.UID = src.UID
	}
	if src.GID != 0 {
		dst.GID = src.GID
	}
	if src.DevMajor != 0 {
		dst.DevMajor = src.DevMajor
	}
	if src.DevMinor != 0 {
		dst.DevMinor = src.DevMinor
	}
	if len(src.Xattrs) > 0 {
		if dst.Xattrs == nil {
			dst.Xattrs = make(map[string][]byte, len(src.Xattrs))
		}
		for k, v := range src.Xattrs {
			dst.Xattrs[k] = v
		}
	}
}

// cleanEntryPath cleans a tar name to a relative path without trailing
// slash; the root is "".
func cleanEntryPath(p string) string {
	return strings.TrimPrefix(filepath.Clean("/"+p), "/")
}

func parentDir(p string) string {
	dir, _ := filepath.Split(p)
	return dir
}

// reader is a metadata.Reader over a built tree. The tree does not change
// after build, so readers need no locks.
type reader struct {
	tree    *tree
	sr      *io.SectionReader
	release func()
	closed  atomic.Bool
}

var _ metadata.Reader = (*reader)(nil)

func (r *reader) RootID() uint32 { return rootID }

func (r *reader) node(id uint32) (*node, error) {
	if id == 0 || int(id) >= len(r.tree.nodes) {
		return nil, fmt.Errorf("node %d: %w", id, os.ErrNotExist)
	}
	return &r.tree.nodes[id], nil
}

// GetAttr returns the node's attributes. The Xattrs map is shared: callers
// must not change it.
func (r *reader) GetAttr(id uint32) (metadata.Attr, error) {
	n, err := r.node(id)
	if err != nil {
		return metadata.Attr{}, err
	}
	return n.attr, nil
}

func (r *reader) GetChild(pid uint32, base string) (uint32, metadata.Attr, error) {
	p, err := r.node(pid)
	if err != nil {
		return 0, metadata.Attr{}, err
	}
	id, ok := p.children[base]
	if !ok {
		return 0, metadata.Attr{}, fmt.Errorf("child %q of %d: %w", base, pid, os.ErrNotExist)
	}
	return id, r.tree.nodes[id].attr, nil
}

func (r *reader) ForeachChild(id uint32, f func(name string, id uint32, mode os.FileMode) bool) error {
	n, err := r.node(id)
	if err != nil {
		return nil // soci's store: no children recorded, nothing to call
	}
	for name, c := range n.children {
		if !f(name, c, r.tree.nodes[c].attr.Mode) {
			break
		}
	}
	return nil
}

func (r *reader) OpenFile(id uint32) (metadata.File, error) {
	n, err := r.node(id)
	if err != nil {
		return nil, err
	}
	if !n.attr.Mode.IsRegular() {
		return nil, fmt.Errorf("%d is not a regular file", id)
	}
	return &file{fileEntry: n.file, size: compression.Offset(n.attr.Size)}, nil
}

// Clone shares the tree; only the first Close of the original returns the
// entries to the budget.
func (r *reader) Clone(sr *io.SectionReader) (metadata.Reader, error) {
	return &reader{tree: r.tree, sr: sr, release: func() {}}, nil
}

func (r *reader) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.release()
	}
	return nil
}

type file struct {
	fileEntry
	size compression.Offset
}

func (f *file) GetUncompressedFileSize() compression.Offset { return f.size }
func (f *file) GetUncompressedOffset() compression.Offset   { return f.uncompressedOffset }
func (f *file) TarName() string                             { return f.tarName }
func (f *file) TarHeaderOffset() compression.Offset         { return f.tarHeaderOffset }
func (f *file) TarHeaderSize() compression.Offset           { return f.tarHeaderSize }
