package imagegen

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hermes-oci/hermes/tests/harness/need"
)

// TestCompareDir builds a directory by hand that matches a small image, then
// breaks it in several ways and checks each is reported.
func TestCompareDir(t *testing.T) {
	need.Root(t) // to set owners
	spec := Spec{Layers: []Layer{{Kind: Files, Entries: []Entry{
		{Name: "d", Type: tar.TypeDir, Mode: 0o1777},
		{Name: "d/f", Mode: 0o4750, UID: 1000, GID: 65534, Content: []byte("content\n"), Xattrs: map[string]string{"user.k": "v"}},
		{Name: "d/l", Type: tar.TypeSymlink, Linkname: "f"},
		{Name: "d/h", Type: tar.TypeLink, Linkname: "d/f"},
		{Name: "d/p", Type: tar.TypeFifo, Mode: 0o600},
	}}}}
	img, err := Image(spec, WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	d := filepath.Join(root, "d")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(d, 0o755))
	must(os.Chmod(d, 0o777|os.ModeSticky))
	f := filepath.Join(d, "f")
	must(os.WriteFile(f, []byte("content\n"), 0o644))
	must(os.Chown(f, 1000, 65534))
	must(os.Chmod(f, 0o750|os.ModeSetuid))
	if err := syscall.Setxattr(f, "user.k", []byte("v"), 0); err != nil {
		need.Missing(t, "user xattrs on %s: %v", d, err)
	}
	must(os.Symlink("f", filepath.Join(d, "l")))
	must(os.Link(f, filepath.Join(d, "h")))
	must(syscall.Mkfifo(filepath.Join(d, "p"), 0o600))

	diffs, err := CompareDir(root, want, CompareOptions{})
	if err != nil || len(diffs) != 0 {
		t.Fatalf("matching tree: %v %v", diffs, err)
	}

	must(os.WriteFile(filepath.Join(root, "extra"), nil, 0o644))
	must(os.Remove(filepath.Join(d, "l")))
	must(os.Symlink("elsewhere", filepath.Join(d, "l")))
	must(os.Remove(filepath.Join(d, "p")))
	must(os.Chmod(d, 0o755))
	must(syscall.Setxattr(f, "user.k", []byte("changed"), 0))
	must(os.WriteFile(f, []byte("CONTENT\n"), 0o644)) // same size, other bytes; keeps mode
	diffs, err = CompareDir(root, want, CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(diffs, "\n")
	for _, expect := range []string{"extra: present", "d/l: symlink", "d/p: missing", "d: mode 0755, want 1777", "d/f: xattr user.k", "d/f: sha256", "d/h: sha256"} {
		if !strings.Contains(all, expect) {
			t.Errorf("no %q in diffs:\n%s", expect, all)
		}
	}
	ignored, _ := CompareDir(root, want, CompareOptions{Ignore: func(rel string) bool { return rel == "extra" || strings.HasPrefix(rel, "d") }})
	if len(ignored) != 0 {
		t.Errorf("ignored paths still reported: %v", ignored)
	}
}
