package harness

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/tools/images"
)

// BuildImages builds Hermes' images from the working tree (tools/images,
// what `make images` runs) for platforms (default linux/amd64) and pushes
// them to registryHost/hermes/NAME:test. only names a subset
// (controller, registry, snapshotter).
func BuildImages(t testing.TB, registryHost string, platforms []string, only ...string) map[string]images.Result {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if len(platforms) == 0 {
		platforms = []string{"linux/amd64"}
	}
	var log strings.Builder
	start := time.Now()
	res, err := images.Build(context.Background(), images.Options{Root: root, Registry: registryHost + "/hermes", Tag: "test",
		Platforms: platforms, Only: only, Log: &log})
	if err != nil {
		t.Fatalf("build images: %v\n%s", err, log.String())
	}
	t.Logf("images built and pushed in %s:\n%s", time.Since(start).Round(100*time.Millisecond), log.String())
	out := map[string]images.Result{}
	for _, r := range res {
		name := r.Ref[strings.LastIndex(r.Ref, "/")+1:]
		name, _, _ = strings.Cut(name, ":")
		out[name] = r
	}
	return out
}
