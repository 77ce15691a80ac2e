package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/containerd/platforms"

	"github.com/hermes-oci/hermes/controller/build"
	"github.com/hermes-oci/hermes/controller/internal/envflag"
	"github.com/hermes-oci/hermes/controller/internal/progress"
)

// runBuild is `hermes build`: flags to a build.Builder and one Build.
func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cacheHost, platformList, dockerConfig, pullSecret, optimizations string
		tempDir, toolID, plainHTTP, progressMode, output                 string
		minLayer, span, align, memLimit                                  int64
		concurrency                                                      int
		stage                                                            bool
	)
	fs := envflag.New("hermes build")
	fs.SetOutput(stderr)
	fs.String(&cacheHost, "cache", "HERMES_CACHE_REGISTRY", "", "cache registry host[:port] to push the index to (required)")
	fs.String(&platformList, "platform", "HERMES_PLATFORMS", "linux/amd64", `platforms to index, comma-separated, or "all"`)
	fs.String(&dockerConfig, "docker-config", "HERMES_DOCKER_CONFIG", "", "Docker config.json with registry credentials (default: Docker's own)")
	fs.String(&pullSecret, "pull-secret", "HERMES_PULL_SECRET", "", "file with a Kubernetes pull Secret as JSON, or its .dockerconfigjson, for the origin registry")
	fs.Size(&minLayer, "min-layer-size", "HERMES_MIN_LAYER_SIZE", build.DefaultMinLayerSize, "layers smaller than this get no zTOC (0 indexes every layer)")
	fs.Size(&span, "span-size", "HERMES_SPAN_SIZE", build.DefaultSpanSize, "uncompressed bytes between checkpoints")
	fs.Size(&align, "align-files-from", "HERMES_ALIGN_FILES_FROM", build.DefaultAlignFilesFrom, "files this big or bigger start a span of their own (0: no alignment, zTOCs as soci makes them)")
	fs.String(&optimizations, "optimizations", "HERMES_OPTIMIZATIONS", "", `comma-separated soci optimizations to enable ("xattr")`)
	fs.Int(&concurrency, "concurrency", "HERMES_BUILD_CONCURRENCY", 0, "layers built at once (0: number of CPUs); each may stage one layer on disk")
	fs.Bool(&stage, "stage-layers", "HERMES_STAGE_LAYERS", false, "stage every layer in a temp file and index it with soci's file-based builder (slower; same zTOCs)")
	fs.String(&tempDir, "temp-dir", "HERMES_TEMP_DIR", "", "directory for staged layers (default $TMPDIR)")
	fs.String(&toolID, "build-tool-identifier", "HERMES_BUILD_TOOL_IDENTIFIER", build.DefaultBuildToolIdentifier, "identifier written into zTOCs and the index")
	fs.String(&plainHTTP, "plain-http", "HERMES_PLAIN_HTTP", "", "comma-separated registry hosts spoken to over plain HTTP (loopback hosts always are)")
	fs.Size(&memLimit, "memory-limit", "HERMES_MEMORY_LIMIT", 192<<20, "soft limit of the Go heap: garbage is collected harder near it (0: none; GOMEMLIMIT wins if set)")
	fs.String(&progressMode, "progress", "HERMES_PROGRESS", "auto", "progress display: auto, tty, plain or none")
	fs.String(&output, "output", "HERMES_OUTPUT", "text", "result format: text or json")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hermes build [flags] IMAGE\n\nBuilds a SOCI v1 index for IMAGE (tag or digest) and pushes it to the cache registry.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: want exactly one IMAGE, got %d arguments", errUsage, fs.NArg())
	}
	if cacheHost == "" {
		return fmt.Errorf("%w: --cache is required", errUsage)
	}
	if minLayer == 0 {
		minLayer = 1 // the library's zero means "default"; here 0 means every layer
	}
	if memLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// A zTOC is serialized in memory (32 KiB per span plus the file
		// list); the limit keeps the garbage of that from piling up.
		debug.SetMemoryLimit(memLimit)
	}
	plats, all, err := build.ParsePlatforms(platformList)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if align == 0 {
		align = -1 // the library's zero means "default"; here 0 means off
	}
	settings := build.Settings{MinLayerSize: minLayer, SpanSize: span, AlignFilesFrom: align, BuildToolIdentifier: toolID}
	for _, o := range strings.Split(optimizations, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if _, err := soci.ParseOptimization(o); err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		settings.XAttrOptimization = true // xattr is soci's only optimization
	}

	creds, err := build.DockerConfigCredentials(dockerConfig)
	if err != nil {
		return err
	}
	originCreds := creds
	if pullSecret != "" {
		data, err := os.ReadFile(pullSecret)
		if err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		secret, err := build.SecretCredentials(data)
		if err != nil {
			return err
		}
		originCreds = build.ChainCredentials(secret, creds)
	}

	plain := splitList(plainHTTP)
	builder, err := build.New(build.Config{
		CacheHost:        cacheHost,
		CacheCredentials: creds,
		Concurrency:      concurrency,
		TempDir:          tempDir,
		StageLayers:      stage,
		PlainHTTP:        func(h string) bool { return build.IsLoopback(h) || slices.Contains(plain, h) },
	})
	if err != nil {
		return err
	}

	req := build.Request{
		Image:             fs.Arg(0),
		Platforms:         plats,
		AllPlatforms:      all,
		Settings:          settings,
		OriginCredentials: originCreds,
	}
	var display *progress.Display
	switch progressMode {
	case "auto":
		display = progress.New(stderr, isTerminal(stderr))
	case "tty":
		display = progress.New(stderr, true)
	case "plain":
		display = progress.New(stderr, false)
	case "none":
	default:
		return fmt.Errorf("%w: --progress %q: want auto, tty, plain or none", errUsage, progressMode)
	}
	if display != nil {
		req.Progress = display.Update
	}

	res, err := builder.Build(ctx, req)
	if display != nil {
		display.Finish()
	}
	if err != nil {
		return err
	}
	return printResult(stdout, output, res)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// printResult writes the result for people (text) or programs (json).
func printResult(w io.Writer, format string, res *build.Result) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(w, "%s (%s)\n", res.Reference, res.Digest)
	for _, p := range res.Platforms {
		plat := platforms.Format(p.Platform)
		switch {
		case p.Existed:
			fmt.Fprintf(w, "  %s: index %s already in %s for manifest %s; nothing to do\n", plat, p.Index.Digest, res.CacheRepository, p.Manifest.Digest)
		case p.Index == nil:
			fmt.Fprintf(w, "  %s: every layer skipped; no index for manifest %s\n", plat, p.Manifest.Digest)
		default:
			built := 0
			for _, l := range p.Layers {
				if l.State == build.LayerBuilt {
					built++
				}
			}
			fmt.Fprintf(w, "  %s: pushed index %s to %s (subject %s, %d of %d layers indexed)\n", plat, p.Index.Digest, res.CacheRepository, p.Manifest.Digest, built, len(p.Layers))
		}
	}
	return nil
}
