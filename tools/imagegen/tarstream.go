package imagegen

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// genEntry is one tar entry on its way into a layer: a header and, for
// regular files, a reader of exactly hdr.Size bytes.
type genEntry struct {
	hdr  *tar.Header
	body io.Reader
}

// writeLayerTar streams the tar of l into w.
func writeLayerTar(w io.Writer, l Layer, env *buildEnv) error {
	tw := tar.NewWriter(w)
	emit := func(e genEntry) error {
		if err := tw.WriteHeader(e.hdr); err != nil {
			return fmt.Errorf("tar header %s: %w", e.hdr.Name, err)
		}
		if e.body != nil && e.hdr.Size > 0 {
			n, err := io.CopyN(tw, e.body, e.hdr.Size)
			if err != nil {
				return fmt.Errorf("tar content %s (%d of %d bytes): %w", e.hdr.Name, n, e.hdr.Size, err)
			}
		}
		return nil
	}
	var err error
	switch l.Kind {
	case Random:
		err = randomEntries(l, emit)
	case Compressible:
		err = compressibleEntries(l, emit)
	case Busybox:
		err = busyboxEntries(env.busybox, emit)
	case Files:
		err = fileEntries(l.Entries, emit)
	default:
		err = fmt.Errorf("%w: unknown layer kind %d", ErrInvalidSpec, l.Kind)
	}
	if err != nil {
		return err
	}
	return tw.Close()
}

// dirHeader and fileHeader make the headers of generated layers: root-owned,
// fixed mtime, no user or group names.
func dirHeader(name string, mode int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: Epoch}
}

func fileHeader(name string, mode, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size, ModTime: Epoch}
}

// parentDirs emits a directory entry for every parent of root, top down.
func parentDirs(root string, emit func(genEntry) error) error {
	parts := strings.Split(root, "/")
	for i := range parts {
		if err := emit(genEntry{hdr: dirHeader(strings.Join(parts[:i+1], "/"), 0o755)}); err != nil {
			return err
		}
	}
	return nil
}

func layerRoot(l Layer, prefix string) (string, error) {
	root := l.Root
	if root == "" {
		root = fmt.Sprintf("%s-%d", prefix, l.Seed)
	}
	if err := checkName(root); err != nil {
		return "", err
	}
	return strings.TrimSuffix(root, "/"), nil
}

// filesPerDir keeps generated directories at a realistic fan-out.
const filesPerDir = 100

// randomEntries: <root>/dNNNN/fNNNNNN.bin, Size bytes of PRNG output spread
// evenly over Files files.
func randomEntries(l Layer, emit func(genEntry) error) error {
	root, err := layerRoot(l, "random")
	if err != nil {
		return err
	}
	n := l.Files
	if n <= 0 {
		n = int(max(1, l.Size/(8<<20))) // one file per 8 MiB
	}
	if err := parentDirs(root, emit); err != nil {
		return err
	}
	per, rest := l.Size/int64(n), l.Size%int64(n)
	for i := 0; i < n; i++ {
		if i%filesPerDir == 0 {
			if err := emit(genEntry{hdr: dirHeader(fmt.Sprintf("%s/d%04d", root, i/filesPerDir), 0o755)}); err != nil {
				return err
			}
		}
		size := per
		if i == n-1 {
			size += rest
		}
		name := fmt.Sprintf("%s/d%04d/f%06d.bin", root, i/filesPerDir, i)
		if err := emit(genEntry{hdr: fileHeader(name, 0o644, size), body: randReader{newRNG(l.Seed, int64(i))}}); err != nil {
			return err
		}
	}
	return nil
}

type randReader struct{ r *rng }

func (r randReader) Read(p []byte) (int, error) { r.r.fill(p); return len(p), nil }

// Byte shares of a Compressible tree per content class, and file-count
// shares: many small text and source files, fewer large binaries, as in a
// real distribution image.
const (
	textBytesPct, srcBytesPct   = 25, 35 // the rest are ELF-like binaries
	textFilesPct, srcFilesPct   = 40, 45
	defaultCompressibleFileSize = 64 << 10
	compressibleSizeSpread      = 64 // largest/smallest file weight within a class
	compressiblePackageMaxFiles = 40
)

type treeFile struct {
	name  string
	size  int64
	class int // 0 text, 1 source, 2 binary
	idx   int64
}

// compressibleEntries lays out a distribution-like tree under root:
//
//	<root>/usr/share/doc/<pkg>/<word>-<n>.txt     text
//	<root>/usr/src/<pkg>/<ident>-<n>.c            source
//	<root>/usr/lib/<pkg>/lib<ident>-<n>.so        ELF-like binaries
//
// File sizes vary over a wide range within each class; their sum is exactly
// l.Size.
func compressibleEntries(l Layer, emit func(genEntry) error) error {
	root, err := layerRoot(l, "tree")
	if err != nil {
		return err
	}
	n := l.Files
	if n <= 0 {
		n = int(max(1, l.Size/defaultCompressibleFileSize))
	}
	v := newVocab(l.Seed)
	r := newRNG(l.Seed, 0x74726565)
	counts := [3]int{n * textFilesPct / 100, n * srcFilesPct / 100, 0}
	counts[2] = n - counts[0] - counts[1]
	budgets := [3]int64{l.Size * textBytesPct / 100, l.Size * srcBytesPct / 100, 0}
	budgets[2] = l.Size - budgets[0] - budgets[1]
	// A class with no files hands its bytes to the next one that has some.
	for c := 0; c < 3; c++ {
		if counts[c] == 0 {
			budgets[(c+1)%3] += budgets[c]
			budgets[c] = 0
		}
	}
	if counts[2] == 0 && budgets[2] > 0 { // tiny n: put everything in the last class with files
		for c := 1; c >= 0; c-- {
			if counts[c] > 0 {
				budgets[c] += budgets[2]
				budgets[2] = 0
				break
			}
		}
	}
	var files []treeFile
	idx := int64(0)
	for c := 0; c < 3; c++ {
		weights := make([]float64, counts[c])
		sum := 0.0
		for i := range weights {
			// Log-uniform over [1, spread): many small files, a few big ones.
			w := 1.0
			for k := r.intn(1 << 16); k > 0; k >>= 3 {
				w *= 1.0 + float64(k&7)/7
			}
			weights[i] = min(w, compressibleSizeSpread)
			sum += weights[i]
		}
		left := budgets[c]
		pkg := ""
		inPkg := 0
		for i, w := range weights {
			size := int64(float64(budgets[c]) * w / sum)
			if i == len(weights)-1 {
				size = left
			}
			size = min(size, left)
			left -= size
			if inPkg == 0 {
				pkg = string(v.ident(r))
				inPkg = 1 + r.intn(compressiblePackageMaxFiles)
			}
			inPkg--
			var name string
			switch c {
			case 0:
				name = fmt.Sprintf("usr/share/doc/%s/%s-%d.txt", pkg, v.word(r), idx)
			case 1:
				ext := ".c"
				if r.intn(3) == 0 {
					ext = ".go"
				}
				name = fmt.Sprintf("usr/src/%s/%s-%d%s", pkg, v.ident(r), idx, ext)
			default:
				name = fmt.Sprintf("usr/lib/%s/lib%s-%d.so", pkg, v.ident(r), idx)
			}
			files = append(files, treeFile{name: root + "/" + name, size: size, class: c, idx: idx})
			idx++
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	if err := parentDirs(root, emit); err != nil {
		return err
	}
	made := map[string]bool{root: true}
	var mkdirs func(dir string) error
	mkdirs = func(dir string) error {
		if made[dir] {
			return nil
		}
		if err := mkdirs(path.Dir(dir)); err != nil {
			return err
		}
		made[dir] = true
		return emit(genEntry{hdr: dirHeader(dir, 0o755)})
	}
	for _, f := range files {
		if err := mkdirs(path.Dir(f.name)); err != nil {
			return err
		}
		fr := newRNG(l.Seed, f.idx)
		var body io.Reader
		mode := int64(0o644)
		switch f.class {
		case 0:
			body = v.textReader(fr)
		case 1:
			body = v.sourceReader(fr)
		default:
			body = v.elfReader(fr, f.size)
			mode = 0o755
		}
		if err := emit(genEntry{hdr: fileHeader(f.name, mode, f.size), body: body}); err != nil {
			return err
		}
	}
	return nil
}

// checkName rejects paths that would escape the root or be ambiguous.
func checkName(name string) error {
	clean := path.Clean(strings.TrimSuffix(name, "/"))
	if name == "" || strings.HasPrefix(name, "/") || clean != strings.TrimSuffix(name, "/") || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return fmt.Errorf("%w: path %q must be relative, clean and inside the root", ErrInvalidSpec, name)
	}
	return nil
}

// fileEntries writes explicit entries in the order given: the caller decides
// (hard link targets must come before their links, in the same layer).
//
// A hard link's header gets its target's mode, owner and xattrs: both name
// one inode, and extractors disagree on what differing values mean
// (containerd applies the link's to the shared inode, soci keeps the
// target's), so generated layers never differ there.
func fileEntries(entries []Entry, emit func(genEntry) error) error {
	written := map[string]*tar.Header{}
	for _, e := range entries {
		ge, err := e.genEntry()
		if err != nil {
			return err
		}
		h := ge.hdr
		if h.Typeflag == tar.TypeLink {
			if target, ok := written[strings.TrimSuffix(h.Linkname, "/")]; ok {
				h.Mode, h.Uid, h.Gid, h.PAXRecords = target.Mode, target.Uid, target.Gid, target.PAXRecords
			}
		} else {
			written[strings.TrimSuffix(h.Name, "/")] = h
		}
		if err := emit(ge); err != nil {
			return err
		}
	}
	return nil
}

func (e Entry) genEntry() (genEntry, error) {
	if err := checkName(e.Name); err != nil {
		return genEntry{}, err
	}
	typ := e.Type
	if typ == 0 || typ == tar.TypeRegA {
		typ = tar.TypeReg
	}
	h := &tar.Header{
		Typeflag: typ,
		Name:     strings.TrimSuffix(e.Name, "/"),
		Mode:     e.Mode,
		Uid:      e.UID,
		Gid:      e.GID,
		Linkname: e.Linkname,
		ModTime:  e.ModTime,
		Devmajor: e.Devmajor,
		Devminor: e.Devminor,
	}
	if h.ModTime.IsZero() {
		h.ModTime = Epoch
	}
	if h.Mode == DefaultMode {
		switch typ {
		case tar.TypeDir:
			h.Mode = 0o755
		case tar.TypeSymlink:
			h.Mode = 0o777
		default:
			h.Mode = 0o644
		}
	}
	if h.Mode < 0 || h.Mode > 0o7777 {
		return genEntry{}, fmt.Errorf("%w: %s: mode %o", ErrInvalidSpec, e.Name, e.Mode)
	}
	if len(e.Xattrs) > 0 {
		h.PAXRecords = make(map[string]string, len(e.Xattrs))
		for k, v := range e.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	var body io.Reader
	switch typ {
	case tar.TypeDir:
		h.Name += "/"
	case tar.TypeReg:
		if e.Content != nil {
			h.Size = int64(len(e.Content))
			body = bytes.NewReader(e.Content)
		} else {
			if e.Size < 0 {
				return genEntry{}, fmt.Errorf("%w: %s: size %d", ErrInvalidSpec, e.Name, e.Size)
			}
			h.Size = e.Size
			body = fillReader(e.Fill, e.Seed)
		}
	case tar.TypeSymlink, tar.TypeLink:
		if e.Linkname == "" {
			return genEntry{}, fmt.Errorf("%w: %s: link without a target", ErrInvalidSpec, e.Name)
		}
		if typ == tar.TypeLink {
			if err := checkName(e.Linkname); err != nil {
				return genEntry{}, fmt.Errorf("hard link %s: %w", e.Name, err)
			}
		}
	case tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
	default:
		return genEntry{}, fmt.Errorf("%w: %s: unsupported tar type %q", ErrInvalidSpec, e.Name, typ)
	}
	return genEntry{hdr: h, body: body}, nil
}

// sparseStride is the distance between the data blocks of a FillSparse file.
const sparseStride, sparseBlock = 1 << 20, 4096

func fillReader(f Fill, seed int64) io.Reader {
	switch f {
	case FillRandom:
		return randReader{newRNG(seed, 0x66696c6c)}
	case FillSparse:
		return &sparseReader{r: newRNG(seed, 0x73707273)}
	case FillText:
		return newVocab(seed).textReader(newRNG(seed, 0x74657874))
	default:
		return zeroReader{}
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// sparseReader: a PRNG-filled block at the start of every sparseStride, zeros
// elsewhere.
type sparseReader struct {
	r   *rng
	off int64
}

func (s *sparseReader) Read(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		in := s.off % sparseStride
		var k int
		if in < sparseBlock {
			k = int(min(int64(len(p)), sparseBlock-in))
			s.r.fill(p[:k])
		} else {
			k = int(min(int64(len(p)), sparseStride-in))
			clear(p[:k])
		}
		p = p[k:]
		s.off += int64(k)
	}
	return n, nil
}
