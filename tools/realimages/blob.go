package realimages

import (
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// blobLayer is a cached gzip blob whose digests are known, so pushing it
// never re-reads it to hash it.
type blobLayer struct {
	path string
	li   layerInfo
}

func newBlobLayer(blobs string, li layerInfo) (v1.Layer, error) {
	p := filepath.Join(blobs, "sha256", strings.TrimPrefix(li.Digest, "sha256:"))
	if _, err := os.Stat(p); err != nil {
		return nil, err
	}
	return partial.CompressedToLayer(&blobLayer{path: p, li: li})
}

func (b *blobLayer) Digest() (v1.Hash, error)            { return v1.NewHash(b.li.Digest) }
func (b *blobLayer) DiffID() (v1.Hash, error)            { return v1.NewHash(b.li.DiffID) }
func (b *blobLayer) Size() (int64, error)                { return b.li.Size, nil }
func (b *blobLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (b *blobLayer) Compressed() (io.ReadCloser, error)  { return os.Open(b.path) }

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
