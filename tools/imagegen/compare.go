package imagegen

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"golang.org/x/sys/unix"
)

// CompareOptions relaxes CompareDir for filesystems that cannot show
// everything a layer records.
type CompareOptions struct {
	// Ignore skips paths (relative, slash-separated) in both trees, e.g.
	// mount points a runtime adds.
	Ignore func(rel string) bool
	// SkipXattrs does not read extended attributes.
	SkipXattrs bool
	// SkipContent compares sizes but does not hash file content (which reads
	// every byte: on a lazily loaded mount it fetches the whole image).
	SkipContent bool
}

// CompareDir compares the filesystem at root (an unpacked or mounted image)
// with want, as returned by Tree, and returns every difference, one line
// each, sorted; nil means they match. It checks presence, type, permission
// bits (with setuid/setgid/sticky), owner, size and sha256 of regular files,
// symlink targets, device numbers, the extended attributes listed in want,
// and that hard-linked files have a link count above one.
func CompareDir(root string, want map[string]FileInfo, opts CompareOptions) ([]string, error) {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	ignored := func(rel string) bool { return opts.Ignore != nil && opts.Ignore(rel) }
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ignored(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		seen[rel] = true
		w, ok := want[rel]
		if !ok {
			add("%s: present, not in the image", rel)
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		compareOne(rel, p, fi, w, opts, add)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("compare %s: %w", root, err)
	}
	for rel := range want {
		if !seen[rel] && !ignored(rel) {
			add("%s: missing", rel)
		}
	}
	sort.Strings(diffs)
	return diffs, nil
}

func compareOne(rel, p string, fi os.FileInfo, w FileInfo, opts CompareOptions, add func(string, ...any)) {
	typ := tarType(fi.Mode())
	if typ != w.Type {
		add("%s: type %q, want %q", rel, typ, w.Type)
		return
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st != nil && (int(st.Uid) != w.UID || int(st.Gid) != w.GID) {
		add("%s: owner %d:%d, want %d:%d", rel, st.Uid, st.Gid, w.UID, w.GID)
	}
	if typ != tar.TypeSymlink { // symlink permissions are meaningless on Linux
		if m := permBits(fi.Mode()); m != w.Mode {
			add("%s: mode %04o, want %04o", rel, m, w.Mode)
		}
	}
	switch typ {
	case tar.TypeReg:
		if fi.Size() != w.Size {
			add("%s: size %d, want %d", rel, fi.Size(), w.Size)
		} else if !opts.SkipContent {
			if sum, err := fileSHA256(p); err != nil {
				add("%s: read: %v", rel, err)
			} else if sum != w.SHA256 {
				add("%s: sha256 %s, want %s", rel, sum, w.SHA256)
			}
		}
		if w.HardLink != "" && st != nil && st.Nlink < 2 {
			add("%s: link count %d, want a hard link (to %s)", rel, st.Nlink, w.HardLink)
		}
	case tar.TypeSymlink:
		if target, err := os.Readlink(p); err != nil || target != w.Linkname {
			add("%s: symlink -> %q (%v), want -> %q", rel, target, err, w.Linkname)
		}
	case tar.TypeChar, tar.TypeBlock:
		if st != nil && (int64(unix.Major(st.Rdev)) != w.Devmajor || int64(unix.Minor(st.Rdev)) != w.Devminor) {
			add("%s: device %d:%d, want %d:%d", rel, unix.Major(st.Rdev), unix.Minor(st.Rdev), w.Devmajor, w.Devminor)
		}
	}
	if !opts.SkipXattrs {
		for k, v := range w.Xattrs {
			got, err := lgetxattr(p, k)
			if err != nil || got != v {
				add("%s: xattr %s = %q (%v), want %q", rel, k, got, err, v)
			}
		}
	}
}

func tarType(m fs.FileMode) byte {
	switch {
	case m.IsDir():
		return tar.TypeDir
	case m&fs.ModeSymlink != 0:
		return tar.TypeSymlink
	case m&fs.ModeNamedPipe != 0:
		return tar.TypeFifo
	case m&fs.ModeCharDevice != 0:
		return tar.TypeChar
	case m&fs.ModeDevice != 0:
		return tar.TypeBlock
	case m.IsRegular():
		return tar.TypeReg
	}
	return '?'
}

// permBits turns Go's FileMode back into the Unix bits a tar header holds.
func permBits(m fs.FileMode) int64 {
	b := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func lgetxattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
