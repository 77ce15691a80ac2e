// Command images builds Hermes' container images from its Go binaries,
// without a Docker daemon, and pushes them (package images):
//
//	HERMES_IMAGE_REGISTRY=registry.example.com/hermes images --root ..
//
// Settings are flags, each with an environment variable for make:
// HERMES_IMAGE_REGISTRY (required), HERMES_IMAGE_TAG, HERMES_IMAGE_PLATFORMS,
// HERMES_IMAGES (which binaries).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hermes-oci/hermes/tools/images"
)

func main() {
	env := func(name, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	root := fs.String("root", "..", "repository root")
	reg := fs.String("registry", env("HERMES_IMAGE_REGISTRY", ""), "push to REGISTRY/NAME:TAG (env HERMES_IMAGE_REGISTRY; required)")
	tag := fs.String("tag", env("HERMES_IMAGE_TAG", "dev"), "image tag (env HERMES_IMAGE_TAG)")
	plats := fs.String("platforms", env("HERMES_IMAGE_PLATFORMS", "linux/amd64,linux/arm64"), "comma-separated platforms (env HERMES_IMAGE_PLATFORMS); cgo binaries skip those without a C cross compiler")
	only := fs.String("only", env("HERMES_IMAGES", ""), "comma-separated subset: controller, registry, snapshotter (env HERMES_IMAGES)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if *reg == "" {
		fmt.Fprintln(os.Stderr, "images:", images.ErrNoRegistry)
		os.Exit(2)
	}
	abs, err := filepath.Abs(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(2)
	}
	if _, err := os.Stat(filepath.Join(abs, "controller")); err != nil {
		fmt.Fprintf(os.Stderr, "images: --root %s is not Hermes' repository root: %v\n", abs, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := images.Options{Root: abs, Registry: *reg, Tag: *tag, Platforms: split(*plats), Only: split(*only), Log: os.Stderr}
	res, err := images.Build(ctx, o)
	for _, r := range res {
		fmt.Printf("%s@%s\n", r.Ref, r.Digest)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func split(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
