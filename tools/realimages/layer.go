package realimages

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// layerInfo is a cached layer blob's description.
type layerInfo struct {
	Key    string `json:"key"`
	Digest string `json:"digest"` // sha256:<hex> of the gzip blob
	DiffID string `json:"diffID"` // sha256:<hex> of the tar
	Size   int64  `json:"size"`   // gzip bytes
	TarLen int64  `json:"tarSize"`
	Files  int    `json:"files"`
}

// skipDirs are directories whose contents never go into a layer (a build's
// mount points), as a container builder leaves them.
var skipDirs = map[string]bool{"dev": true, "proc": true, "sys": true, "run": true, "tmp": true}

// writeLayer tars dir (an overlayfs upper dir or a whole rootfs) into a gzip
// blob under blobs, turning overlayfs whiteouts (0/0 character devices) and
// opaque directories (trusted.overlay.opaque=y) into OCI whiteouts.
func writeLayer(dir, blobs, key string) (layerInfo, error) {
	if err := os.MkdirAll(filepath.Join(blobs, "sha256"), 0o755); err != nil {
		return layerInfo{}, err
	}
	tmp, err := os.CreateTemp(blobs, "layer-*.tmp")
	if err != nil {
		return layerInfo{}, err
	}
	defer os.Remove(tmp.Name())
	blobHash, tarHash := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, blobHash)}
	gz, err := gzip.NewWriterLevel(cw, gzip.DefaultCompression)
	if err != nil {
		return layerInfo{}, err
	}
	tc := &countWriter{w: io.MultiWriter(gz, tarHash)}
	tw := tar.NewWriter(tc)
	files, err := tarDir(tw, dir)
	if err != nil {
		return layerInfo{}, fmt.Errorf("tar %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return layerInfo{}, err
	}
	if err := gz.Close(); err != nil {
		return layerInfo{}, err
	}
	if err := tmp.Close(); err != nil {
		return layerInfo{}, err
	}
	info := layerInfo{Key: key, Digest: "sha256:" + hexOf(blobHash), DiffID: "sha256:" + hexOf(tarHash),
		Size: cw.n, TarLen: tc.n, Files: files}
	if err := os.Rename(tmp.Name(), filepath.Join(blobs, "sha256", hexOf(blobHash))); err != nil {
		return layerInfo{}, err
	}
	return info, nil
}

func hexOf(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func tarDir(tw *tar.Writer, root string) (int, error) {
	var rels []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if top := strings.SplitN(rel, "/", 2); len(top) == 2 && skipDirs[top[0]] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		rels = append(rels, rel)
		return nil
	})
	if err != nil {
		return 0, err
	}
	sort.Strings(rels)
	links := map[uint64]string{} // inode → first name, for hard links
	files := 0
	for _, rel := range rels {
		p := filepath.Join(root, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return files, err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0 {
			// An overlayfs whiteout: the step deleted a lower file.
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join(filepath.Dir(rel), ".wh."+filepath.Base(rel)),
				ModTime: fi.ModTime(), Format: tar.FormatPAX}); err != nil {
				return files, err
			}
			continue
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return files, err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return files, err
		}
		h.Name, h.Uname, h.Gname, h.Format = rel, "", "", tar.FormatPAX
		h.Uid, h.Gid = int(st.Uid), int(st.Gid)
		h.AccessTime, h.ChangeTime = fi.ModTime(), fi.ModTime()
		if fi.IsDir() {
			h.Name += "/"
		}
		if x := xattrs(p); len(x) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range x {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := links[st.Ino]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				links[st.Ino] = rel
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return files, err
		}
		if fi.IsDir() && opaque(p) {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel + "/.wh..wh..opq",
				ModTime: fi.ModTime(), Format: tar.FormatPAX}); err != nil {
				return files, err
			}
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			files++
			f, err := os.Open(p)
			if err != nil {
				return files, err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return files, fmt.Errorf("%s: %w", rel, err)
			}
		}
	}
	return files, nil
}

func opaque(p string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(p, "trusted.overlay.opaque", buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// xattrs returns the extended attributes a layer keeps (security.* such as
// file capabilities); overlayfs' own trusted.overlay.* ones are dropped.
func xattrs(p string) map[string]string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	out := map[string]string{}
	for _, k := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if !strings.HasPrefix(k, "security.") {
			continue
		}
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, k, v)
		if err == nil {
			out[k] = string(v[:m])
		}
	}
	return out
}

func readInfo(p string) (layerInfo, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return layerInfo{}, false
	}
	var li layerInfo
	if json.Unmarshal(b, &li) != nil {
		return layerInfo{}, false
	}
	return li, true
}
