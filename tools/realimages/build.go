package realimages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// ErrUnknown is returned for an image name no recipe has.
var ErrUnknown = errors.New("unknown real image")

// Step is one build step and so one layer.
type Step struct {
	// Name says what the step does (the layer's history entry).
	Name string
	// Script runs with /bin/sh -ec in a chroot of the image so far. Empty for
	// the base step, which Debootstrap makes.
	Script string
	// Host runs on the host with the step's upper directory (files to add)
	// and the image so far (read-only) instead of Script: what a
	// multi-stage build's COPY --from does.
	Host func(ctx context.Context, upper, merged string) error
	// HostKey stands for Host in the step's cache key; change it when Host
	// changes.
	HostKey string
	// Debootstrap makes the base rootfs: the suite and components.
	Debootstrap []string
	// Files are written into the upper directory after the step runs
	// (path → content).
	Files map[string]string
}

// Recipe is an image: its steps bottom to top and its config.
type Recipe struct {
	Name   string
	Steps  []Step
	Config v1.Config
}

// Dir is the cache directory: $HERMES_CACHE/realimages.
func Dir() string {
	c := os.Getenv("HERMES_CACHE")
	if c == "" {
		h, _ := os.UserHomeDir()
		c = filepath.Join(h, ".cache", "hermes")
	}
	return filepath.Join(c, "realimages")
}

// Built reports whether every layer of the recipe is in the cache.
func Built(r Recipe) bool {
	parent := ""
	for _, s := range r.Steps {
		key := stepKey(parent, s)
		if _, ok := readInfo(filepath.Join(Dir(), "steps", key, "layer.json")); !ok {
			return false
		}
		parent = key
	}
	return true
}

// Build builds (or takes from the cache) every step of r and returns the
// image. It needs root. log gets a line per step.
func Build(ctx context.Context, r Recipe, log *slog.Logger) (v1.Image, error) {
	dir := Dir()
	blobs := filepath.Join(dir, "blobs")
	var layers []layerInfo
	var uppers []string // bottom to top
	parent := ""
	for i, s := range r.Steps {
		key := stepKey(parent, s)
		sd := filepath.Join(dir, "steps", key)
		upper := filepath.Join(sd, "upper")
		li, ok := readInfo(filepath.Join(sd, "layer.json"))
		if !ok {
			start := time.Now()
			log.Info("build step", "image", r.Name, "step", i, "name", s.Name, "dir", sd)
			if err := runStep(ctx, s, sd, uppers); err != nil {
				return nil, fmt.Errorf("%s step %d (%s): %w", r.Name, i, s.Name, err)
			}
			var err error
			if li, err = writeLayer(upper, blobs, key); err != nil {
				return nil, fmt.Errorf("%s step %d (%s): layer: %w", r.Name, i, s.Name, err)
			}
			b, _ := json.MarshalIndent(li, "", "  ")
			if err := os.WriteFile(filepath.Join(sd, "layer.json"), b, 0o644); err != nil {
				return nil, err
			}
			log.Info("step done", "image", r.Name, "step", i, "took", time.Since(start).Round(time.Second),
				"gzip", li.Size, "tar", li.TarLen, "files", li.Files)
		}
		layers = append(layers, li)
		uppers = append(uppers, upper)
		parent = key
	}
	return assemble(r, layers)
}

func stepKey(parent string, s Step) string {
	h := sha256.New()
	fmt.Fprintf(h, "v1\x00%s\x00%s\x00%s\x00%s\x00%q", parent, s.Name, s.Script, s.HostKey, s.Debootstrap)
	for _, k := range sortedKeys(s.Files) {
		fmt.Fprintf(h, "\x00%s\x00%s", k, s.Files[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// runStep runs s into sd/upper over the lower uppers (bottom to top).
func runStep(ctx context.Context, s Step, sd string, lowers []string) error {
	if err := os.RemoveAll(sd); err != nil {
		return err
	}
	upper := filepath.Join(sd, "upper")
	if err := os.MkdirAll(upper, 0o755); err != nil {
		return err
	}
	if len(s.Debootstrap) > 0 {
		if _, err := exec.LookPath("debootstrap"); err != nil {
			return fmt.Errorf("debootstrap not installed (apt-get install debootstrap): %w", err)
		}
		args := append([]string{"--variant=minbase"}, s.Debootstrap[:len(s.Debootstrap)-1]...)
		args = append(args, s.Debootstrap[len(s.Debootstrap)-1], upper, "http://deb.debian.org/debian")
		if err := run(ctx, "", nil, "debootstrap", args...); err != nil {
			return err
		}
		if s.Script != "" {
			if err := chroot(ctx, upper, s.Script); err != nil {
				return err
			}
		}
		return writeFiles(upper, s.Files)
	}
	work := filepath.Join(sd, "work")
	merged := filepath.Join(sd, "merged")
	for _, d := range []string{work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	rev := make([]string, len(lowers))
	for i, l := range lowers {
		rev[len(lowers)-1-i] = l
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(rev, ":"), upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	defer func() {
		_ = unix.Unmount(merged, unix.MNT_DETACH)
		_ = os.RemoveAll(work)
		_ = os.Remove(merged)
	}()
	if s.Host != nil {
		if err := s.Host(ctx, upper, merged); err != nil {
			return err
		}
	}
	if s.Script != "" {
		if err := chroot(ctx, merged, s.Script); err != nil {
			return err
		}
	}
	return writeFiles(merged, s.Files)
}

// chroot runs script in merged with /proc, /dev and the host's resolv.conf,
// as a build container would have them, and removes them again.
func chroot(ctx context.Context, merged, script string) error {
	var mounted []string
	defer func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			_ = unix.Unmount(mounted[i], unix.MNT_DETACH)
		}
	}()
	for _, m := range []struct{ src, dst, fs string }{{"proc", "proc", "proc"}, {"/dev", "dev", ""}} {
		dst := filepath.Join(merged, m.dst)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		var err error
		if m.fs != "" {
			err = unix.Mount(m.src, dst, m.fs, 0, "")
		} else {
			err = unix.Mount(m.src, dst, "", unix.MS_BIND|unix.MS_REC, "")
		}
		if err != nil {
			return fmt.Errorf("mount %s: %w", dst, err)
		}
		mounted = append(mounted, dst)
	}
	resolv := filepath.Join(merged, "etc", "resolv.conf")
	old, oldErr := os.ReadFile(resolv)
	host, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return err
	}
	_ = os.Remove(resolv)
	if err := os.WriteFile(resolv, host, 0o644); err != nil {
		return err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
		"LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}
	err = run(ctx, "", env, "chroot", merged, "/bin/sh", "-ec", script)
	if oldErr == nil {
		_ = os.WriteFile(resolv, old, 0o644)
	} else {
		_ = os.Remove(resolv)
	}
	return err
}

func run(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, os.Stderr), io.MultiWriter(&out, os.Stderr)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return nil
}

// tailBuffer keeps the last 4 KiB written, for error messages.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

func writeFiles(root string, files map[string]string) error {
	for _, k := range sortedKeys(files) {
		p := filepath.Join(root, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(files[k]), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// assemble makes the image from cached layers: gzip layers in step order.
func assemble(r Recipe, layers []layerInfo) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	var adds []mutate.Addendum
	for i, li := range layers {
		l, err := newBlobLayer(filepath.Join(Dir(), "blobs"), li)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: l, MediaType: types.OCILayer,
			History: v1.History{CreatedBy: r.Steps[i].Name, Created: v1.Time{Time: time.Unix(0, 0).UTC()}}})
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config = r.Config
	return mutate.ConfigFile(img, cf)
}
