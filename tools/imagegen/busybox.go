package imagegen

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
)

// BusyboxPath is where Debian's busybox-static package installs the binary.
const BusyboxPath = "/bin/busybox"

// busyboxApplets get a symlink in /bin so `sh -c '...'` scripts work.
var busyboxApplets = []string{
	"[", "awk", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dd",
	"df", "dirname", "du", "echo", "env", "false", "find", "grep", "gunzip",
	"gzip", "head", "hexdump", "hostname", "id", "kill", "ln", "ls", "md5sum",
	"mkdir", "mkfifo", "mount", "mv", "od", "printf", "ps", "readlink",
	"realpath", "rm", "rmdir", "sed", "seq", "sh", "sha1sum", "sha256sum",
	"sha512sum", "sleep", "sort", "stat", "sync", "tail", "tar", "tee", "test",
	"touch", "tr", "true", "umount", "uname", "uniq", "wc", "wget", "which",
	"xargs",
}

// busybox is the host binary a Busybox layer packs, read once per build.
type busybox struct {
	content []byte
	sha256  string
}

func loadBusybox(p string) (*busybox, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (install Debian's busybox-static)", ErrNoBusybox, p)
	}
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	sum := sha256.Sum256(b)
	return &busybox{content: b, sha256: hex.EncodeToString(sum[:])}, nil
}

// busyboxEntries lays out a minimal root filesystem: the usual top-level
// directories (runc mounts over /proc, /sys, /dev), /bin/busybox with applet
// symlinks, and /etc/passwd and /etc/group so `id` and `ls -l` resolve names.
func busyboxEntries(bb *busybox, emit func(genEntry) error) error {
	if bb == nil {
		return fmt.Errorf("%w: no busybox loaded", ErrNoBusybox)
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	group := "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"
	var entries []Entry
	dir := func(name string, mode int64) {
		entries = append(entries, Entry{Name: name, Type: tar.TypeDir, Mode: mode})
	}
	dir("bin", 0o755)
	entries = append(entries, Entry{Name: "bin/busybox", Mode: 0o755, Content: bb.content})
	for _, a := range busyboxApplets {
		entries = append(entries, Entry{Name: "bin/" + a, Type: tar.TypeSymlink, Mode: 0o777, Linkname: "busybox"})
	}
	dir("dev", 0o755)
	dir("etc", 0o755)
	entries = append(entries,
		Entry{Name: "etc/group", Mode: 0o644, Content: []byte(group)},
		Entry{Name: "etc/passwd", Mode: 0o644, Content: []byte(passwd)})
	dir("home", 0o755)
	dir("proc", 0o555)
	dir("root", 0o700)
	dir("sys", 0o555)
	dir("tmp", 0o1777)
	dir("usr", 0o755)
	dir("usr/bin", 0o755)
	dir("var", 0o755)
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	return fileEntries(entries, emit)
}
