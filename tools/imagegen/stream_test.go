package imagegen

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStreamedLayer: a streamed layer's blob is what its digest and size
// say, every time it is read; its tar is the one Image generates for the
// same Layer; and a second call takes the digests from the cache.
func TestStreamedLayer(t *testing.T) {
	dir := t.TempDir()
	l := Layer{Kind: Random, Size: 20 << 20, Files: 3, Seed: 9}
	sl, err := StreamedLayer(l, WithCacheDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	metas, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(metas) != 1 {
		t.Fatalf("%d cache entries, want 1", len(metas))
	}
	digest, _ := sl.Digest()
	size, _ := sl.Size()
	for i := 0; i < 2; i++ {
		rc, _ := sl.Compressed()
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil || n != size || "sha256:"+hex.EncodeToString(h.Sum(nil)) != digest.String() {
			t.Fatalf("read %d: %d bytes (%v), want %d with digest %s", i, n, err, size, digest)
		}
	}

	img, err := Image(Spec{Layers: []Layer{l}}, WithCacheDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	wantDiff, _ := ls[0].DiffID()
	rc, _ := sl.Compressed()
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, zr); err != nil {
		t.Fatal(err)
	}
	if diff, _ := sl.DiffID(); "sha256:"+hex.EncodeToString(h.Sum(nil)) != wantDiff.String() || diff != wantDiff {
		t.Fatalf("streamed tar differs from Image's (diffID %s, want %s)", diff, wantDiff)
	}

	// A second call reads the cache entry (here made to lie about the
	// size) instead of generating the layer again.
	b, err := os.ReadFile(metas[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(metas[0], []byte(strings.Replace(string(b), fmt.Sprintf(`"size":%d`, size), `"size":1`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := StreamedLayer(l, WithCacheDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := again.Size(); n != 1 {
		t.Fatalf("second call: size %d, not the cached one", n)
	}
}
