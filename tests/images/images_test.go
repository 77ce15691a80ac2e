// Package images tests `make images` (tools/images): the images it pushes
// to a real registry, their configuration, and that the controller's image
// runs under containerd.
package images

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/images"
)

func TestImages(t *testing.T) {
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	crane := harness.Bin(t, "crane")
	built := harness.BuildImages(t, reg.Host, []string{"linux/amd64", "linux/arm64"})
	for _, b := range images.Binaries {
		r, ok := built[b.Name]
		if !ok {
			t.Fatalf("no %s image among %v", b.Name, built)
		}
		if !slices.Contains(r.Platforms, "linux/amd64") {
			t.Errorf("%s: built for %v, want linux/amd64 at least", b.Name, r.Platforms)
		}
		if !b.CGO && !slices.Contains(r.Platforms, "linux/arm64") {
			t.Errorf("%s builds without cgo, but not for linux/arm64: %v", b.Name, r.Skipped)
		}
		if len(r.Platforms)+len(r.Skipped) != 2 {
			t.Errorf("%s: built %v, skipped %v: every platform asked for is one or the other", b.Name, r.Platforms, r.Skipped)
		}
		if len(r.Platforms) > 1 {
			var idx v1.IndexManifest
			if err := json.Unmarshal([]byte(harness.Run(t, time.Minute, crane, "manifest", "--insecure", r.Ref)), &idx); err != nil {
				t.Fatal(err)
			}
			if len(idx.Manifests) != len(r.Platforms) {
				t.Errorf("%s: an index of %d manifests for %v", b.Name, len(idx.Manifests), r.Platforms)
			}
		}
		for _, p := range r.Platforms {
			var cf v1.ConfigFile
			if err := json.Unmarshal([]byte(harness.Run(t, time.Minute, crane, "config", "--insecure", "--platform", p, r.Ref)), &cf); err != nil {
				t.Fatal(err)
			}
			if got := cf.OS + "/" + cf.Architecture; got != p {
				t.Errorf("%s %s: config says %s", b.Name, p, got)
			}
			if want := fmt.Sprintf("%d:%d", images.User, images.User); cf.Config.User != want {
				t.Errorf("%s %s: user %q, want %q (non-root)", b.Name, p, cf.Config.User, want)
			}
			if want := []string{"/usr/local/bin/" + b.Name}; !slices.Equal(cf.Config.Entrypoint, want) {
				t.Errorf("%s %s: entrypoint %v, want %v", b.Name, p, cf.Config.Entrypoint, want)
			}
		}
	}

	// The controller's image runs: containerd pulls it and runs its binary
	// (static: the image has no libc) as the image's non-root user.
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	harness.WriteHostsFile(t, c.HostsDir, reg.Host, "http://"+reg.Host)
	ref := built["hermes-controller"].Ref
	c.Ctr(t, "images", "pull", "--platform", "linux/amd64", ref)
	out := c.Ctr(t, "run", "--rm", ref, "hermes-images-help", "/usr/local/bin/hermes-controller", "--help")
	if !strings.Contains(out, "Usage: hermes-controller") || !strings.Contains(out, "--leader-elect") {
		t.Errorf("hermes-controller --help in its image printed:\n%s", out)
	}
}

// TestNoRegistry: without a registry the command says what to set.
func TestNoRegistry(t *testing.T) {
	if _, err := images.Build(t.Context(), images.Options{}); err == nil || !strings.Contains(err.Error(), "HERMES_IMAGE_REGISTRY") {
		t.Fatalf("Build without a registry: %v; want an error naming HERMES_IMAGE_REGISTRY", err)
	}
}
