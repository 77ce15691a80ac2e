// Command socibuild is the reference the build benchmark compares Hermes
// with: soci-snapshotter's own index path, as `soci create` runs it. It pulls
// an image into a containerd local content store, then builds a SOCI index
// with soci's IndexBuilder, and prints the time of each step as JSON. It runs
// as its own process so that its peak RSS can be measured.
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
}

func main() {
	ref := flag.String("ref", "", "image reference (loopback registries use plain HTTP)")
	dir := flag.String("dir", "", "work directory: content store, soci store, artifacts db")
	platform := flag.String("platform", "linux/amd64", "platform to index")
	minLayer := flag.Int64("min-layer-size", 10<<20, "soci --min-layer-size")
	span := flag.Int64("span-size", 4<<20, "soci --span-size")
	flag.Parse()
	if err := run(context.Background(), *ref, *dir, *platform, *minLayer, *span, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "socibuild:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, ref, dir, platform string, minLayer, span int64, out io.Writer) error {
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

	blobs, err := store.NewSociStore(filepath.Join(dir, "soci"))
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
