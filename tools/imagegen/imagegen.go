package imagegen

import (
	"errors"
	"time"
)

// Errors returned by this package; callers match them with errors.Is.
var (
	// ErrInvalidSpec means a Spec, Layer or Entry cannot be built as given.
	ErrInvalidSpec = errors.New("imagegen: invalid spec")
	// ErrNoBusybox means a Busybox layer was asked for but /bin/busybox
	// (Debian's busybox-static) is missing.
	ErrNoBusybox = errors.New("imagegen: busybox-static not found")
)

// Kind selects how a Layer's content is generated.
type Kind int

const (
	// Random fills Layer.Files files with incompressible PRNG bytes totalling
	// Layer.Size.
	Random Kind = iota
	// Compressible generates a realistic tree (text, source files,
	// shared-library-like ELF binaries) of Layer.Files files totalling
	// Layer.Size uncompressed bytes, which gzips about 3:1.
	Compressible
	// Busybox holds /bin/busybox from Debian's busybox-static plus applet
	// symlinks and the usual top-level directories.
	Busybox
	// Files holds exactly Layer.Entries.
	Files
)

// Layer describes one generated layer.
type Layer struct {
	Kind Kind
	// Size is the target number of uncompressed content bytes (Random,
	// Compressible).
	Size int64
	// Files is the number of files to spread Size over (Random,
	// Compressible); 0 picks a default.
	Files int
	// Seed makes content distinct between layers of the same shape.
	Seed int64
	// Root is the directory generated files go under (Random,
	// Compressible); empty means "random-<seed>" or "tree-<seed>".
	Root string
	// Entries are the tar entries of a Files layer, written in the order
	// given (a whiteout must precede nothing in particular; see Tree).
	Entries []Entry
	// Uncompressed makes a plain tar layer instead of gzip.
	Uncompressed bool
}

// Fill selects generated content for an Entry without literal Content.
type Fill int

const (
	// FillZero is all zero bytes (no content at all when Size is 0).
	FillZero Fill = iota
	// FillRandom is incompressible PRNG bytes.
	FillRandom
	// FillSparse is zeros with a PRNG-filled 4 KiB block at every MiB
	// boundary: a sparse-like file, cheap to compress, of any size.
	FillSparse
	// FillText is compressible text from the Compressible generator.
	FillText
)

// Entry is one tar entry of a Files layer.
type Entry struct {
	// Name is the slash-separated path without a leading "/".
	Name string
	// Type is a tar type flag: tar.TypeReg, TypeDir, TypeSymlink, TypeLink,
	// TypeFifo, TypeChar, TypeBlock. Zero means tar.TypeReg.
	Type byte
	// Mode holds the permission bits, including setuid/setgid/sticky
	// (0 is a valid mode: 0000). Use DefaultMode to get 0644/0755.
	Mode     int64
	UID, GID int
	// Linkname is the target of a symlink or hard link. A hard link's target
	// must be an earlier entry of the same layer; the link's header then
	// carries the target's mode, owner and xattrs (they share an inode), and
	// the Entry's own are ignored.
	Linkname string
	// Content is the literal content of a regular file. When nil, Size
	// bytes are generated with Fill and Seed.
	Content []byte
	Size    int64
	Fill    Fill
	Seed    int64
	// Xattrs are written as PAX SCHILY.xattr.<name> records.
	Xattrs map[string]string
	// ModTime zero means the fixed Epoch.
	ModTime time.Time
	// Devmajor and Devminor are for character and block devices.
	Devmajor, Devminor int64
}

// DefaultMode, used as Entry.Mode, means 0755 for directories and 0644 for
// everything else.
const DefaultMode int64 = -1

// Epoch is the modification time of every generated entry without an
// explicit ModTime, and the image's creation time.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Spec describes an image.
type Spec struct {
	// Layers, bottom first.
	Layers     []Layer
	Entrypoint []string
	Cmd        []string
	// Env defaults to a PATH covering /bin and /usr/bin.
	Env []string
	// Platform is "os/arch[/variant]"; default "linux/amd64".
	Platform string
}

// FileInfo is one path of the merged filesystem computed by Tree.
type FileInfo struct {
	Type     byte  // tar type flag; hard links are reported as tar.TypeReg
	Mode     int64 // permission bits incl. setuid/setgid/sticky
	UID, GID int
	Size     int64
	SHA256   string // hex sha256 of the content of regular files
	Linkname string // symlink target
	// HardLink is the path this file was hard-linked to in its layer, if any.
	HardLink           string
	Xattrs             map[string]string
	Devmajor, Devminor int64
}

// Option adjusts how images are built (not what they contain).
type Option func(*options)

type options struct {
	cacheDir string
	busybox  string
}

// WithBusybox packs the busybox binary at path instead of BusyboxPath.
func WithBusybox(path string) Option { return func(o *options) { o.busybox = path } }

// WithCacheDir stores generated layer blobs in dir instead of
// $HERMES_CACHE/imagegen.
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }
