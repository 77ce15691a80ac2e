// Command imagegen builds a deterministic synthetic image (or a
// multi-platform index), pushes it when --ref is given, and prints its
// digest. Generated layers are cached under $HERMES_CACHE/imagegen.
//
//	imagegen --ref 127.0.0.1:5000/bench/r:1 --preset R
//	imagegen --ref 127.0.0.1:5000/demo:1 --layers busybox,random:270MiB,compressible:300MiB
//	imagegen --edge-case --platforms linux/amd64,linux/arm64 --ref 127.0.0.1:5000/edge:1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/hermes-oci/hermes/tools/imagegen"
)

// config holds every setting; each is declared once in bind with its flag,
// environment variable, default and help.
type config struct {
	ref, layers, preset, platforms, entrypoint, cmd, cacheDir string
	edgeCase, busybox                                         bool
}

func bind(fs *flag.FlagSet, c *config) {
	str := func(p *string, name, env, def, help string) {
		if v, ok := os.LookupEnv(env); ok {
			def = v
		}
		fs.StringVar(p, name, def, help+" (env "+env+")")
	}
	boolean := func(p *bool, name, env string, def bool, help string) {
		if v, ok := os.LookupEnv(env); ok {
			def = v == "1" || strings.EqualFold(v, "true")
		}
		fs.BoolVar(p, name, def, help+" (env "+env+")")
	}
	str(&c.ref, "ref", "IMAGEGEN_REF", "", "push to this reference (registry/repo:tag); empty: build and print the digest only")
	str(&c.layers, "layers", "IMAGEGEN_LAYERS", "", "comma-separated layers kind:size[:files=N][:seed=N][:plain], e.g. random:270MiB,compressible:300MiB")
	str(&c.preset, "preset", "IMAGEGEN_PRESET", "", "R (4 x 270 MB random), C (3.3 GB compressible tree) or demo; replaces --layers")
	str(&c.platforms, "platforms", "IMAGEGEN_PLATFORMS", imagegen.DefaultPlatform, "comma-separated platforms; more than one builds an index")
	str(&c.entrypoint, "entrypoint", "IMAGEGEN_ENTRYPOINT", "", `entrypoint, a JSON array or space-separated words`)
	str(&c.cmd, "cmd", "IMAGEGEN_CMD", "", `cmd, a JSON array or space-separated words (default /bin/sh with busybox)`)
	str(&c.cacheDir, "cache-dir", "IMAGEGEN_CACHE_DIR", imagegen.DefaultCacheDir(), "where generated layer blobs are cached")
	boolean(&c.edgeCase, "edge-case", "IMAGEGEN_EDGE_CASE", false, "build the edge-case layer set (on top of busybox), then any --layers")
	boolean(&c.busybox, "busybox", "IMAGEGEN_BUSYBOX", true, "put a busybox layer at the bottom of --layers images")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := run(ctx, os.Args[1:], os.Stdout, log)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "imagegen:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var c config
	fs := flag.NewFlagSet("imagegen", flag.ContinueOnError)
	bind(fs, &c)
	if err := fs.Parse(args); err != nil {
		return err
	}
	spec, err := specFrom(c)
	if err != nil {
		return err
	}
	plats := strings.Split(c.platforms, ",")
	opts := []imagegen.Option{imagegen.WithCacheDir(c.cacheDir)}
	start := time.Now()
	var target interface {
		remote.Taggable
		Digest() (v1.Hash, error)
	}
	if len(plats) == 1 {
		spec.Platform = strings.TrimSpace(plats[0])
		if target, err = imagegen.Image(spec, opts...); err != nil {
			return err
		}
	} else {
		specs := map[string]imagegen.Spec{}
		for _, p := range plats {
			specs[strings.TrimSpace(p)] = spec
		}
		if target, err = imagegen.Index(specs, opts...); err != nil {
			return err
		}
	}
	log.Info("built", "layers", len(spec.Layers), "platforms", len(plats), "elapsed", time.Since(start).Round(time.Millisecond))
	d, err := target.Digest()
	if err != nil {
		return err
	}
	if c.ref != "" {
		start = time.Now()
		if d, err = imagegen.Push(ctx, c.ref, target); err != nil {
			return err
		}
		log.Info("pushed", "ref", c.ref, "digest", d, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	_, err = fmt.Fprintln(stdout, d)
	return err
}

func specFrom(c config) (imagegen.Spec, error) {
	var spec imagegen.Spec
	switch strings.ToLower(c.preset) {
	case "":
	case "r":
		spec = imagegen.PresetRandom(imagegen.BenchRandomLayers, imagegen.BenchRandomLayerSize)
	case "c":
		spec = imagegen.PresetCompressible(imagegen.BenchCompressibleLayers, imagegen.BenchCompressibleSize, imagegen.BenchCompressibleFiles)
	case "demo":
		spec = imagegen.Demo()
	default:
		return spec, fmt.Errorf("--preset %q: want R, C or demo", c.preset)
	}
	if c.edgeCase {
		if c.preset != "" {
			return spec, errors.New("--edge-case and --preset are exclusive")
		}
		spec = imagegen.EdgeCase()
	}
	if c.layers != "" {
		if c.preset != "" {
			return spec, errors.New("--layers and --preset are exclusive")
		}
		ls, err := imagegen.ParseLayers(c.layers)
		if err != nil {
			return spec, err
		}
		if !c.edgeCase && c.busybox && ls[0].Kind != imagegen.Busybox {
			spec.Layers = append(spec.Layers, imagegen.Layer{Kind: imagegen.Busybox})
		}
		spec.Layers = append(spec.Layers, ls...)
	}
	if len(spec.Layers) == 0 {
		return spec, errors.New("nothing to build: give --layers, --preset or --edge-case")
	}
	if spec.Layers[0].Kind == imagegen.Busybox && spec.Cmd == nil {
		spec.Cmd = []string{"/bin/sh"}
	}
	var err error
	if c.entrypoint != "" {
		if spec.Entrypoint, err = words(c.entrypoint); err != nil {
			return spec, fmt.Errorf("--entrypoint: %w", err)
		}
		if c.cmd == "" {
			spec.Cmd = nil
		}
	}
	if c.cmd != "" {
		if spec.Cmd, err = words(c.cmd); err != nil {
			return spec, fmt.Errorf("--cmd: %w", err)
		}
	}
	return spec, nil
}

// words reads a JSON array of strings, or splits on whitespace.
func words(s string) ([]string, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "[") {
		var w []string
		return w, json.Unmarshal([]byte(s), &w)
	}
	return strings.Fields(s), nil
}
