package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// CopyArtifact copies the manifest desc, its config and its layers (not its
// subject) from repository src to dst, both host/name on plain-HTTP
// registries. It puts a SOCI index next to the image it indexes, as `soci
// push` does; oras writes the referrers tag schema when dst has no
// Referrers API.
func CopyArtifact(t testing.TB, src, dst string, desc ocispec.Descriptor) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	from, err := remote.NewRepository(src)
	if err != nil {
		t.Fatal(err)
	}
	to, err := remote.NewRepository(dst)
	if err != nil {
		t.Fatal(err)
	}
	from.PlainHTTP, to.PlainHTTP = true, true
	read := func(rc io.ReadCloser, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatalf("copy %s: %v", desc.Digest, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("copy %s: %v", desc.Digest, err)
		}
		return b
	}
	body := read(from.Manifests().Fetch(ctx, desc))
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("copy %s: %v", desc.Digest, err)
	}
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if err := to.Blobs().Push(ctx, d, bytes.NewReader(read(from.Blobs().Fetch(ctx, d)))); err != nil {
			t.Fatalf("copy blob %s: %v", d.Digest, err)
		}
	}
	if err := to.Manifests().Push(ctx, desc, bytes.NewReader(body)); err != nil {
		t.Fatalf("copy %s to %s: %v", desc.Digest, dst, err)
	}
}
