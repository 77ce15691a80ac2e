package imagegen

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Whiteout markers of the OCI layer format.
const (
	WhiteoutPrefix = ".wh."
	OpaqueMarker   = ".wh..wh..opq"
)

// Tree returns the merged filesystem of img: every path (slash-separated,
// no leading "/", the root itself excluded) after applying the layers in
// order, as overlayfs presents it:
//
//   - `.wh.<name>` deletes <name> (and everything below it) from lower layers;
//   - a directory holding `.wh..wh..opq` loses all its lower-layer content;
//   - a non-directory replaces whatever was at its path, a directory
//     replaces a non-directory, and a directory over a directory only
//     updates its metadata;
//   - a hard link is reported as a regular file with its target's content
//     and metadata (they share an inode) and HardLink set;
//   - missing parent directories appear as root-owned 0755 directories.
func Tree(img v1.Image) (map[string]FileInfo, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	t := tree{}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		err = t.apply(tar.NewReader(rc))
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return t, nil
}

// ErrBadLayer means a layer's tar cannot be applied (a hard link to a path
// that does not exist).
var ErrBadLayer = errors.New("imagegen: malformed layer")

type tree map[string]FileInfo

// apply adds one layer. Paths added by this layer are remembered so that a
// whiteout or opaque marker, whatever its position in the tar, only hides
// lower-layer content.
func (t tree) apply(tr *tar.Reader) error {
	fresh := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := cleanPath(h.Name)
		if p == "" {
			continue // the root directory itself
		}
		dir, base := path.Split(p)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == OpaqueMarker:
			t.removeBelow(dir, fresh)
			continue
		case strings.HasPrefix(base, WhiteoutPrefix):
			victim := path.Join(dir, strings.TrimPrefix(base, WhiteoutPrefix))
			if !fresh[victim] {
				delete(t, victim)
			}
			t.removeBelow(victim, fresh)
			continue
		}
		t.mkdirs(dir, fresh)
		fi := FileInfo{
			Type: h.Typeflag, Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid,
			Linkname: h.Linkname, Devmajor: h.Devmajor, Devminor: h.Devminor,
		}
		if fi.Type == tar.TypeRegA {
			fi.Type = tar.TypeReg
		}
		for k, v := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if fi.Xattrs == nil {
					fi.Xattrs = map[string]string{}
				}
				fi.Xattrs[x] = v
			}
		}
		switch fi.Type {
		case tar.TypeReg:
			hs := sha256.New()
			n, err := io.Copy(hs, tr)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			fi.Size, fi.SHA256 = n, hex.EncodeToString(hs.Sum(nil))
		case tar.TypeLink:
			target := cleanPath(h.Linkname)
			tfi, ok := t[target]
			if !ok {
				return fmt.Errorf("%w: hard link %s to missing %s", ErrBadLayer, p, h.Linkname)
			}
			fi = tfi
			fi.HardLink = target
		}
		if old, ok := t[p]; ok && (old.Type == tar.TypeDir) != (fi.Type == tar.TypeDir) {
			t.removeBelow(p, fresh)
		}
		t[p] = fi
		fresh[p] = true
	}
}

// removeBelow deletes the lower-layer entries strictly below dir.
func (t tree) removeBelow(dir string, fresh map[string]bool) {
	prefix := dir + "/"
	for p := range t {
		if strings.HasPrefix(p, prefix) && !fresh[p] {
			delete(t, p)
		}
	}
}

// mkdirs makes dir and its parents directories if they are not already.
func (t tree) mkdirs(dir string, fresh map[string]bool) {
	if dir == "" || dir == "." {
		return
	}
	if fi, ok := t[dir]; ok && fi.Type == tar.TypeDir {
		return
	}
	t.mkdirs(path.Dir(strings.TrimSuffix(dir, "/")), fresh)
	if _, ok := t[dir]; ok {
		t.removeBelow(dir, fresh)
	}
	t[dir] = FileInfo{Type: tar.TypeDir, Mode: 0o755}
	fresh[dir] = true
}

func cleanPath(name string) string {
	p := path.Clean("/" + name)
	return strings.TrimPrefix(p, "/")
}
