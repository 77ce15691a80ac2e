package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/hermes-oci/hermes/tools/imagegen"
)

// Binary is one of Hermes' commands and how it builds.
type Binary struct {
	Name string // image and binary name
	Pkg  string // package path relative to the repository root
	CGO  bool   // needs cgo (and so a C compiler per platform)
}

// Binaries are the images Build makes.
var Binaries = []Binary{
	{Name: "hermes-controller", Pkg: "./controller/cmd/hermes-controller", CGO: true},
	{Name: "hermes-registry", Pkg: "./registry/cmd/hermes-registry"},
	{Name: "hermes-snapshotter", Pkg: "./snapshotter/cmd/hermes-snapshotter", CGO: true},
}

// User is the image's user and group (the "nonroot" id of distroless
// images); the manifests run the controller as it.
const User = 65532

// ErrNoRegistry is returned when Options.Registry is empty.
var ErrNoRegistry = errors.New("no image registry: set HERMES_IMAGE_REGISTRY (e.g. registry.example.com/hermes or 127.0.0.1:5000/hermes)")

// Options configures Build.
type Options struct {
	// Root is the repository root (the module with ./controller, ...).
	Root string
	// Registry is where images go: REGISTRY/NAME:Tag.
	Registry string
	// Tag defaults to "dev".
	Tag string
	// Platforms, os/arch; default linux/amd64 and linux/arm64.
	Platforms []string
	// Only limits Build to these binaries (names); empty: all.
	Only []string
	// Dir keeps built binaries; empty: a temporary directory.
	Dir string
	// Log gets a line per step; nil: discarded.
	Log io.Writer
}

// Result is one pushed image.
type Result struct {
	Ref       string   // REGISTRY/NAME:TAG
	Digest    v1.Hash  // of the image, or of the index
	Platforms []string // built
	Skipped   []string // platforms left out, with the reason
}

// Build builds and pushes every image of o and returns what it pushed.
func Build(ctx context.Context, o Options) ([]Result, error) {
	if o.Registry == "" {
		return nil, ErrNoRegistry
	}
	if o.Tag == "" {
		o.Tag = "dev"
	}
	if len(o.Platforms) == 0 {
		o.Platforms = []string{"linux/amd64", "linux/arm64"}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "hermes-images-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		o.Dir = d
	}
	var out []Result
	for _, b := range Binaries {
		if len(o.Only) > 0 && !contains(o.Only, b.Name) {
			continue
		}
		r, err := buildOne(ctx, o, b)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no image selected by %v; known: controller, registry, snapshotter", o.Only)
	}
	return out, nil
}

func buildOne(ctx context.Context, o Options, b Binary) (Result, error) {
	res := Result{Ref: strings.TrimSuffix(o.Registry, "/") + "/" + b.Name + ":" + o.Tag}
	type built struct {
		img  v1.Image
		plat v1.Platform
	}
	var imgs []built
	for _, p := range o.Platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil || plat.OS == "" || plat.Architecture == "" {
			return res, fmt.Errorf("platform %q: want os/arch", p)
		}
		env := []string{"GOOS=" + plat.OS, "GOARCH=" + plat.Architecture, "GOWORK=off"}
		if b.CGO {
			cc, why := crossCC(plat.OS, plat.Architecture)
			if cc == "" {
				res.Skipped = append(res.Skipped, p+": "+why)
				fmt.Fprintf(o.Log, "%s: skip %s: %s\n", b.Name, p, why)
				continue
			}
			env = append(env, "CGO_ENABLED=1", "CC="+cc)
		} else {
			env = append(env, "CGO_ENABLED=0")
		}
		bin := filepath.Join(o.Dir, fmt.Sprintf("%s-%s-%s", b.Name, plat.OS, plat.Architecture))
		start := time.Now()
		if err := goBuild(ctx, o.Root, bin, b.Pkg, env); err != nil {
			return res, fmt.Errorf("%s for %s: %w", b.Name, p, err)
		}
		if err := requireStatic(bin); err != nil {
			return res, fmt.Errorf("%s for %s: %w", b.Name, p, err)
		}
		fmt.Fprintf(o.Log, "%s: built %s in %s\n", b.Name, p, time.Since(start).Round(100*time.Millisecond))
		img, err := Image(bin, b.Name, *plat)
		if err != nil {
			return res, fmt.Errorf("%s for %s: %w", b.Name, p, err)
		}
		imgs = append(imgs, built{img, *plat})
		res.Platforms = append(res.Platforms, p)
	}
	if len(imgs) == 0 {
		return res, fmt.Errorf("%s: no platform could be built: %s", b.Name, strings.Join(res.Skipped, "; "))
	}
	var err error
	if len(imgs) == 1 {
		res.Digest, err = imagegen.Push(ctx, res.Ref, imgs[0].img)
	} else {
		var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		for _, bi := range imgs {
			plat := bi.plat
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: bi.img, Descriptor: v1.Descriptor{Platform: &plat}})
		}
		res.Digest, err = imagegen.Push(ctx, res.Ref, idx)
	}
	if err != nil {
		return res, err
	}
	fmt.Fprintf(o.Log, "%s: pushed %s@%s (%s)\n", b.Name, res.Ref, res.Digest, strings.Join(res.Platforms, ", "))
	return res, nil
}

// crossCC finds a C compiler for goos/goarch, or says why there is none.
func crossCC(goos, goarch string) (string, string) {
	if cc := os.Getenv("CC_" + goos + "_" + goarch); cc != "" {
		return cc, ""
	}
	if goos == "linux" && goarch == hostArch() {
		return "gcc", ""
	}
	triple := map[string]string{"arm64": "aarch64-linux-gnu", "amd64": "x86_64-linux-gnu", "arm": "arm-linux-gnueabihf", "ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu"}[goarch]
	if goos == "linux" && triple != "" {
		if p, err := exec.LookPath(triple + "-gcc"); err == nil {
			return p, ""
		}
		return "", fmt.Sprintf("cgo (zlib) needs a C cross compiler: no %s-gcc on PATH and CC_%s_%s unset (Debian: gcc-%s and zlib1g-dev:%s)", triple, goos, goarch, triple, goarch)
	}
	return "", fmt.Sprintf("cgo (zlib) needs a C compiler for %s/%s: set CC_%s_%s", goos, goarch, goos, goarch)
}

func hostArch() string {
	out, err := exec.Command("go", "env", "GOHOSTARCH").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// goBuild builds pkg into out, statically linked, stripped, reproducible.
func goBuild(ctx context.Context, root, out, pkg string, env []string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "netgo,osusergo",
		"-ldflags", "-s -w -extldflags -static", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, stderr.String())
	}
	return nil
}

// requireStatic fails for a dynamically linked binary: the image has no
// libc.
func requireStatic(bin string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (has an ELF interpreter); the image has no libc", bin)
		}
	}
	return nil
}

// Image is a one-layer image of the static binary bin as
// /usr/local/bin/name, its entrypoint, with /etc/passwd and /etc/group
// naming user and group 65532 ("nonroot"), which it runs as, and a
// world-writable /tmp.
func Image(bin, name string, plat v1.Platform) (v1.Image, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dir := func(p string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, ModTime: epoch})
	}
	file := func(p string, mode int64, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", User, User)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", User)
	for _, step := range []func() error{
		func() error { return dir("etc", 0o755) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return dir("tmp", 0o1777) },
		func() error { return dir("usr", 0o755) },
		func() error { return dir("usr/local", 0o755) },
		func() error { return dir("usr/local/bin", 0o755) },
		func() error { return file("usr/local/bin/"+name, 0o755, data) },
	} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Created = v1.Time{Time: epoch}
	cf.Config.User = fmt.Sprintf("%d:%d", User, User)
	cf.Config.Entrypoint = []string{"/usr/local/bin/" + name}
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = map[string]string{"org.opencontainers.image.title": name, "org.opencontainers.image.source": "https://github.com/hermes-oci/hermes"}
	return mutate.ConfigFile(img, cf)
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s || "hermes-"+x == s {
			return true
		}
	}
	return false
}
