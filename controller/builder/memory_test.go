package builder

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestStreamedLayerMemory builds the zTOC of a 512 MiB layer with 32 KiB
// spans, the path a streamed gzip layer takes (fetch over HTTP, one-pass
// index, serialization into the temp dir), and requires the Go heap to stay
// far below the zTOC's size while it runs: about 256 MiB of checkpoints
// must go to disk, not accumulate in memory.
func TestStreamedLayerMemory(t *testing.T) {
	const layerSize, bound = 512 << 20, 32 << 20
	settings := DefaultSettings().WithSpanSize(32 << 10)

	// The layer is generated on the fly, twice: once for its digest, once
	// as the origin serves it.
	h := sha256.New()
	size := writeLayer(t, h, layerSize)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.NewDigest(digest.SHA256, h), Size: size}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/test/blobs/"+desc.Digest.String() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(desc.Size))
		w.Header().Set("Docker-Content-Digest", desc.Digest.String())
		if r.Method == http.MethodGet {
			writeLayer(t, w, layerSize)
		}
	}))
	defer srv.Close()

	tmp := t.TempDir()
	b, err := New(Config{CacheHost: "127.0.0.1:1", TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	origin, err := b.repository(strings.TrimPrefix(srv.URL, "http://")+"/test", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &run{b: b, settings: settings, origin: origin, dir: tmp}

	base, peak := heapSampler(t)
	bl, err := r.layer(context.Background(), desc, "gzip", func(Progress) {})
	used := peak() - base
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("zTOC %d MiB, heap in use at most %d MiB above the %d MiB before", bl.ztoc.Size>>20, used>>20, base>>20)
	if bl.ztoc.Size < 4*bound {
		t.Fatalf("zTOC of %d bytes: too small for the bound of %d to tell", bl.ztoc.Size, bound)
	}
	if used > bound {
		t.Errorf("heap grew by %d MiB while building a %d MiB zTOC, bound %d MiB", used>>20, bl.ztoc.Size>>20, bound>>20)
	}

	// The zTOC is what its descriptor says, and the spill file is gone.
	f, err := os.Open(bl.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fh := sha256.New()
	if n, err := io.Copy(fh, f); err != nil || n != bl.ztoc.Size || digest.NewDigest(digest.SHA256, fh) != bl.ztoc.Digest {
		t.Errorf("zTOC file: %d bytes, %v; descriptor %v", n, err, bl.ztoc)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 1 {
		t.Errorf("temp dir holds %d files, want the zTOC only", len(left))
	}
}

// heapSampler samples the bytes of heap objects every few milliseconds from
// now until peak is called, which returns the largest; base is the heap
// after a collection, before sampling starts.
func heapSampler(t *testing.T) (base uint64, peak func() uint64) {
	t.Helper()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	runtime.GC()
	base = read()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var max uint64
	n := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			if v := read(); v > max {
				max = v
			}
			n++
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return base, func() uint64 {
		close(stop)
		wg.Wait()
		if n < 100 {
			t.Fatalf("only %d heap samples", n)
		}
		return max
	}
}

// writeLayer writes a gzip tar of about size bytes to w: 1 MiB files of
// PRNG bytes (each large enough for a checkpoint of its own), stored
// uncompressed so that generating it costs little, which gives a block
// boundary, and so a checkpoint with 32 KiB spans, every 64 KiB. It
// returns the bytes written.
func writeLayer(t testing.TB, w io.Writer, size int64) int64 {
	cw := &counter{w: w}
	zw, err := gzip.NewWriterLevel(cw, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	data := make([]byte, 1<<20)
	x := uint64(1)
	for i := 0; int64(i)*int64(len(data)) < size; i++ {
		for j := 0; j < len(data); j += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(data[j:], x)
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%05d", i), Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Error(err)
			return cw.n
		}
		if _, err := tw.Write(data); err != nil {
			t.Error(err)
			return cw.n
		}
	}
	if err := tw.Close(); err != nil {
		t.Error(err)
	}
	if err := zw.Close(); err != nil {
		t.Error(err)
	}
	return cw.n
}

type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
