package imagegentest

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

const cliTimeout = 2 * time.Minute

// TestPushPullImage pushes an image with every kind of generated layer and
// checks with crane that the registry serves the same digests, and that the
// pulled layers validate.
func TestPushPullImage(t *testing.T) {
	crane := harness.Bin(t, "crane")
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	spec := imagegen.Spec{
		Layers: []imagegen.Layer{
			{Kind: imagegen.Busybox},
			{Kind: imagegen.Random, Size: 2 << 20, Files: 4, Seed: 1},
			{Kind: imagegen.Compressible, Size: 3 << 20, Files: 60, Seed: 2},
		},
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"echo hello"},
	}
	img, err := imagegen.Image(spec, imagegen.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/imagegen/push:v1"
	got, err := imagegen.Push(context.Background(), ref, img)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if got != want {
		t.Fatalf("Push returned %s, image digest %s", got, want)
	}
	if d := strings.TrimSpace(harness.Run(t, cliTimeout, crane, "digest", ref)); d != want.String() {
		t.Fatalf("crane digest %s, want %s", d, want)
	}
	// crane downloads every layer and checks digests and diffIDs.
	harness.Run(t, cliTimeout, crane, "validate", "--remote", ref)

	var m v1.Manifest
	if err := json.Unmarshal([]byte(harness.Run(t, cliTimeout, crane, "manifest", ref)), &m); err != nil {
		t.Fatal(err)
	}
	local, _ := img.Manifest()
	if len(m.Layers) != len(local.Layers) {
		t.Fatalf("registry manifest has %d layers, want %d", len(m.Layers), len(local.Layers))
	}
	for i := range m.Layers {
		if m.Layers[i].Digest != local.Layers[i].Digest || m.Layers[i].Size != local.Layers[i].Size {
			t.Errorf("layer %d: registry %s/%d, local %s/%d", i, m.Layers[i].Digest, m.Layers[i].Size, local.Layers[i].Digest, local.Layers[i].Size)
		}
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal([]byte(harness.Run(t, cliTimeout, crane, "config", ref)), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || strings.Join(cfg.Config.Entrypoint, " ") != "/bin/sh -c" {
		t.Errorf("config: %s/%s entrypoint %q", cfg.OS, cfg.Architecture, cfg.Config.Entrypoint)
	}
}

// TestPushIndex pushes a two-platform index and reads it back with crane.
func TestPushIndex(t *testing.T) {
	crane := harness.Bin(t, "crane")
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	specs := map[string]imagegen.Spec{}
	for i, p := range []string{"linux/amd64", "linux/arm64"} {
		specs[p] = imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Random, Size: 256 << 10, Seed: int64(i)}}}
	}
	idx, err := imagegen.Index(specs, imagegen.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/imagegen/multi:v1"
	got, err := imagegen.Push(context.Background(), ref, idx)
	if err != nil {
		t.Fatal(err)
	}
	if d := strings.TrimSpace(harness.Run(t, cliTimeout, crane, "digest", ref)); d != got.String() {
		t.Fatalf("crane digest %s, Push returned %s", d, got)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal([]byte(harness.Run(t, cliTimeout, crane, "manifest", ref)), &im); err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index has %d manifests", len(im.Manifests))
	}
	for _, d := range im.Manifests {
		plat := d.Platform.OS + "/" + d.Platform.Architecture
		// crane resolves the platform's manifest from the index.
		pd := strings.TrimSpace(harness.Run(t, cliTimeout, crane, "digest", "--platform", plat, ref))
		if pd != d.Digest.String() {
			t.Errorf("%s: crane digest %s, index says %s", plat, pd, d.Digest)
		}
		var cfg v1.ConfigFile
		if err := json.Unmarshal([]byte(harness.Run(t, cliTimeout, crane, "config", "--platform", plat, ref)), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.OS+"/"+cfg.Architecture != plat {
			t.Errorf("%s: config says %s/%s", plat, cfg.OS, cfg.Architecture)
		}
	}
}

// TestEdgeCaseTreeMatchesCraneExport pushes the edge-case image and compares
// imagegen.Tree with `crane export`, ggcr's independent flattening of the
// pulled layers (whiteouts and opaque directories applied).
func TestEdgeCaseTreeMatchesCraneExport(t *testing.T) {
	crane := harness.Bin(t, "crane")
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	img, err := imagegen.Image(imagegen.EdgeCase(), imagegen.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/imagegen/edge:v1"
	if _, err := imagegen.Push(context.Background(), ref, img); err != nil {
		t.Fatal(err)
	}
	tree, err := imagegen.Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "fs.tar")
	harness.Run(t, cliTimeout, crane, "export", ref, out)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := strings.Trim(filepath.Clean("/"+h.Name), "/")
		seen[p] = true
		fi, ok := tree[p]
		if !ok {
			t.Errorf("%s: exported by crane, missing from Tree", p)
			continue
		}
		switch h.Typeflag {
		case tar.TypeLink:
			if fi.HardLink != strings.Trim(filepath.Clean("/"+h.Linkname), "/") {
				t.Errorf("%s: crane hard link to %s, Tree %q", p, h.Linkname, fi.HardLink)
			}
			continue
		case tar.TypeReg:
			hs := sha256.New()
			if _, err := io.Copy(hs, tr); err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(hs.Sum(nil)); got != fi.SHA256 {
				t.Errorf("%s: crane content sha256 %s, Tree %s", p, got, fi.SHA256)
			}
		case tar.TypeSymlink:
			if h.Linkname != fi.Linkname {
				t.Errorf("%s: crane symlink -> %s, Tree -> %s", p, h.Linkname, fi.Linkname)
			}
		}
		if h.Typeflag != fi.Type || h.Mode&0o7777 != fi.Mode || h.Uid != fi.UID || h.Gid != fi.GID {
			t.Errorf("%s: crane %q %o %d:%d, Tree %q %o %d:%d", p, h.Typeflag, h.Mode, h.Uid, h.Gid, fi.Type, fi.Mode, fi.UID, fi.GID)
		}
	}
	for p := range tree {
		if !seen[p] {
			t.Errorf("%s: in Tree, not exported by crane", p)
		}
	}
	if len(seen) < 2500 {
		t.Errorf("crane exported only %d paths", len(seen))
	}
}
