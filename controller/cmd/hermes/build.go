package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/containerd/platforms"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/controller/internal/progress"
	"github.com/hermes-oci/hermes/registry/cli"
)

// buildSettings are `hermes build`'s settings. Index settings start from
// builder.DefaultSettings (see buildCommand), so the CLI and the library
// share one set of defaults.
type buildSettings struct {
	Image        string    `arg:"positional,required" placeholder:"IMAGE" help:"image reference (tag or digest)"`
	Cache        string    `arg:"--cache,env:CACHE_REGISTRY,required" placeholder:"HOST:PORT" help:"cache registry to push the index to"`
	Platform     string    `arg:"--platform,env:PLATFORMS" default:"linux/amd64" help:"platforms to index, comma-separated, or \"all\""`
	DockerConfig string    `arg:"--docker-config,env:DOCKER_CONFIG" placeholder:"FILE" help:"Docker config.json with registry credentials (default: Docker's own)"`
	PullSecret   string    `arg:"--pull-secret,env:PULL_SECRET" placeholder:"FILE" help:"file with a Kubernetes pull Secret as JSON, or its .dockerconfigjson, for the origin registry"`
	MinLayerSize cli.Size  `arg:"--min-layer-size,env:MIN_LAYER_SIZE" placeholder:"SIZE" help:"layers smaller than this get no zTOC (0 indexes every layer)"`
	SpanSize     cli.Size  `arg:"--span-size,env:SPAN_SIZE" placeholder:"SIZE" help:"uncompressed bytes between checkpoints"`
	AlignFrom    *cli.Size `arg:"--align-files-from,env:ALIGN_FILES_FROM" placeholder:"SIZE" help:"files this big or bigger start a span of their own (0: no alignment, zTOCs as soci makes them) [default: a quarter of --span-size]"`
	Optimize     string    `arg:"--optimizations,env:OPTIMIZATIONS" help:"comma-separated soci optimizations to enable (\"xattr\")"`
	Concurrency  int       `arg:"--concurrency,env:BUILD_CONCURRENCY" help:"layers built at once (0: number of CPUs); each may stage one layer on disk"`
	StageLayers  bool      `arg:"--stage-layers,env:STAGE_LAYERS" help:"stage every layer in a temp file and index it with soci's file-based builder (slower; same zTOCs)"`
	TempDir      string    `arg:"--temp-dir,env:TEMP_DIR" placeholder:"DIR" help:"directory for staged layers (default $TMPDIR)"`
	ToolID       string    `arg:"--build-tool-identifier,env:BUILD_TOOL_IDENTIFIER" placeholder:"ID" help:"identifier written into zTOCs and the index"`
	PlainHTTP    string    `arg:"--plain-http,env:PLAIN_HTTP" placeholder:"HOSTS" help:"comma-separated registry hosts spoken to over plain HTTP (loopback hosts always are)"`
	MemoryLimit  cli.Size  `arg:"--memory-limit,env:MEMORY_LIMIT" default:"192MiB" placeholder:"SIZE" help:"soft limit of the Go heap: garbage is collected harder near it (0: none; GOMEMLIMIT wins if set)"`
	Progress     string    `arg:"--progress,env:PROGRESS" default:"auto" help:"progress display: auto, tty, plain or none"`
	Output       string    `arg:"--output,env:OUTPUT" default:"text" help:"result format: text or json"`
}

func buildCommand(stdout, stderr io.Writer) cli.Command[buildSettings] {
	return cli.Command[buildSettings]{
		Name:        "hermes build",
		Description: "hermes build builds a SOCI v1 index for IMAGE and pushes it to the cache registry.",
		EnvPrefix:   "HERMES_",
		New: func() *buildSettings {
			d := builder.DefaultSettings()
			return &buildSettings{MinLayerSize: cli.Size(d.MinLayerSize), SpanSize: cli.Size(d.SpanSize), ToolID: d.BuildToolIdentifier}
		},
		Run: func(ctx context.Context, s *buildSettings) error { return runBuild(ctx, s, stdout, stderr) },
	}
}

// indexSettings turns the flags into builder.Settings.
func (s *buildSettings) indexSettings() (builder.Settings, error) {
	settings := builder.DefaultSettings().WithSpanSize(int64(s.SpanSize))
	settings.MinLayerSize = int64(s.MinLayerSize)
	settings.BuildToolIdentifier = s.ToolID
	if s.AlignFrom != nil {
		settings.AlignFilesFrom = int64(*s.AlignFrom)
	}
	for _, o := range strings.Split(s.Optimize, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if _, err := soci.ParseOptimization(o); err != nil {
			return settings, fmt.Errorf("%w: %w", cli.ErrUsage, err)
		}
		settings.XAttrOptimization = true // xattr is soci's only optimization
	}
	if err := settings.Validate(); err != nil {
		return settings, fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	return settings, nil
}

// runBuild is `hermes build`: settings to a builder.Builder and one Build.
func runBuild(ctx context.Context, s *buildSettings, stdout, stderr io.Writer) error {
	settings, err := s.indexSettings()
	if err != nil {
		return err
	}
	if s.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// A zTOC is serialized in memory (32 KiB per span plus the file
		// list); the limit keeps the garbage of that from piling up.
		debug.SetMemoryLimit(int64(s.MemoryLimit))
	}
	plats, all, err := builder.ParsePlatforms(s.Platform)
	if err != nil {
		return fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	var display *progress.Display
	switch s.Progress {
	case "auto":
		display = progress.New(stderr, isTerminal(stderr))
	case "tty":
		display = progress.New(stderr, true)
	case "plain":
		display = progress.New(stderr, false)
	case "none":
	default:
		return fmt.Errorf("%w: --progress %q: want auto, tty, plain or none", cli.ErrUsage, s.Progress)
	}
	if s.Output != "text" && s.Output != "json" {
		return fmt.Errorf("%w: --output %q: want text or json", cli.ErrUsage, s.Output)
	}

	creds, err := builder.DockerConfigCredentials(s.DockerConfig)
	if err != nil {
		return err
	}
	originCreds := creds
	if s.PullSecret != "" {
		data, err := os.ReadFile(s.PullSecret)
		if err != nil {
			return fmt.Errorf("%w: %w", cli.ErrUsage, err)
		}
		secret, err := builder.SecretCredentials(data)
		if err != nil {
			return err
		}
		originCreds = builder.ChainCredentials(secret, creds)
	}

	b, err := builder.New(builder.Config{
		CacheHost:        s.Cache,
		CacheCredentials: creds,
		Concurrency:      s.Concurrency,
		TempDir:          s.TempDir,
		StageLayers:      s.StageLayers,
		PlainHTTP:        builder.PlainHTTPFor(s.PlainHTTP),
	})
	if err != nil {
		return err
	}
	req := builder.Request{
		Image:             s.Image,
		Platforms:         plats,
		AllPlatforms:      all,
		Settings:          settings,
		OriginCredentials: originCreds,
	}
	if display != nil {
		req.Progress = display.Update
	}
	res, err := b.Build(ctx, req)
	if display != nil {
		display.Finish()
	}
	if err != nil {
		return err
	}
	return printResult(stdout, s.Output, res)
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
func printResult(w io.Writer, format string, res *builder.Result) error {
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
				if l.State == builder.LayerBuilt {
					built++
				}
			}
			fmt.Fprintf(w, "  %s: pushed index %s to %s (subject %s, %d of %d layers indexed)\n", plat, p.Index.Digest, res.CacheRepository, p.Manifest.Digest, built, len(p.Layers))
		}
	}
	return nil
}
