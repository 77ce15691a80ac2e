// Command socibuild is the reference the build benchmark compares Hermes
// with: soci-snapshotter's own index path, as `soci create` runs it. It pulls
// an image into a containerd local content store, then builds a SOCI index
// with soci's IndexBuilder, and prints the time of each step as JSON. It runs
// as its own process so that its peak RSS can be measured.
//
// With -convert DEST it does what `soci convert SRC DEST` + `nerdctl push
// DEST` leave at a registry instead, for the cluster benchmark's peer: soci's
// IndexBuilder.Convert (a SOCI index manifest v2, the default of soci
// v0.16's daemon) writes an OCI index holding the image's manifest, annotated
// with its SOCI index, and the SOCI index; containerd's remotes.PushContent
// pushes that index and everything it references to DEST.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/platforms"
)

// Result is what socibuild prints.
type Result struct {
	PullSeconds  float64 `json:"pull_seconds"`
	BuildSeconds float64 `json:"build_seconds"`
	Ztocs        int     `json:"ztocs"`
	// With -convert: the pushed OCI index and the time to push it.
	Converted   string  `json:"converted,omitempty"`
	PushSeconds float64 `json:"push_seconds,omitempty"`
}

func main() {
	ref := flag.String("ref", "", "image reference (loopback registries use plain HTTP)")
	dir := flag.String("dir", "", "work directory: content store, soci store, artifacts db")
	platform := flag.String("platform", "linux/amd64", "platform to index")
	minLayer := flag.Int64("min-layer-size", 10<<20, "soci --min-layer-size")
	span := flag.Int64("span-size", 4<<20, "soci --span-size")
	convert := flag.String("convert", "", "soci convert to this reference and push it (empty: soci create, no push)")
	flag.Parse()
	if err := run(context.Background(), *ref, *dir, *platform, *minLayer, *span, *convert, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "socibuild:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, ref, dir, platform string, minLayer, span int64, convert string, out io.Writer) error {
	p, err := platforms.Parse(platform)
	if err != nil {
		return err
	}
	cs, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		return err
	}
	start := time.Now()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	name, desc, err := resolver.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	fetcher, err := resolver.Fetcher(ctx, name)
	if err != nil {
		return err
	}
	handler := images.Handlers(remotes.FetchHandler(cs, fetcher), images.LimitManifests(images.ChildrenHandler(cs), platforms.Only(p), 1))
	if err := images.Dispatch(ctx, handler, nil, desc); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	pulled := time.Now()

	sociDir := filepath.Join(dir, "soci")
	if convert != "" {
		// Convert writes manifests that reference the image's blobs: one
		// store holds both (local.Store and soci's oras store share the
		// blobs/sha256 layout), as containerd's content store does for
		// `soci convert`.
		sociDir = filepath.Join(dir, "content")
	}
	blobs, err := store.NewSociStore(sociDir)
	if err != nil {
		return err
	}
	db, err := soci.NewDB(soci.ArtifactsDbPath(dir))
	if err != nil {
		return err
	}
	ib, err := soci.NewIndexBuilder(cs, blobs, soci.WithArtifactsDb(db), soci.WithMinLayerSize(minLayer), soci.WithSpanSize(span))
	if err != nil {
		return err
	}
	// soci prints a line per layer to stdout; keep stdout for the result.
	stdout := os.Stdout
	os.Stdout = os.Stderr
	if convert != "" {
		conv, err := ib.Convert(ctx, images.Image{Name: ref, Target: desc}, soci.ConvertWithPlatforms(p))
		os.Stdout = stdout
		if err != nil {
			return fmt.Errorf("soci convert: %w", err)
		}
		built := time.Now()
		pusher, err := resolver.Pusher(ctx, convert)
		if err != nil {
			return err
		}
		if err := remotes.PushContent(ctx, pusher, *conv, cs, nil, platforms.All, nil); err != nil {
			return fmt.Errorf("push %s: %w", convert, err)
		}
		return json.NewEncoder(out).Encode(Result{
			PullSeconds:  pulled.Sub(start).Seconds(),
			BuildSeconds: built.Sub(pulled).Seconds(),
			Converted:    conv.Digest.String(),
			PushSeconds:  time.Since(built).Seconds(),
		})
	}
	res, err := ib.Build(ctx, images.Image{Name: ref, Target: desc}, soci.WithPlatform(p))
	os.Stdout = stdout
	if err != nil {
		return fmt.Errorf("soci IndexBuilder: %w", err)
	}
	built := time.Now()
	return json.NewEncoder(out).Encode(Result{
		PullSeconds:  pulled.Sub(start).Seconds(),
		BuildSeconds: built.Sub(pulled).Seconds(),
		Ztocs:        len(res.Index.Blobs),
	})
}
