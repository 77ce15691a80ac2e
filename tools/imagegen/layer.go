package imagegen

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/pgzip"
)

// genVersion is part of every cache key. Bump it whenever the bytes
// generated for an unchanged Layer change, so stale blobs are not reused.
const genVersion = 2

// gzipLevel is fixed: the same level on every run is part of determinism.
const gzipLevel = 6

// buildEnv is what a build reads from the host: the busybox binary.
type buildEnv struct {
	busybox *busybox
}

// gzipBlock is the block size of the parallel compressor: part of the
// output format, so fixed.
const gzipBlock = 1 << 20

// newGzipWriter compresses in parallel on every core: klauspost/pgzip cuts
// the stream into gzipBlock blocks, each deflated with the previous 32 KiB
// as dictionary and ended by a sync flush, so the output is one ordinary
// gzip member that only depends on the input, not on timing or core count.
// klauspost/compress underneath is 2-10x faster than compress/gzip
// (incompressible data passes through at GB/s).
func newGzipWriter(w io.Writer) (*pgzip.Writer, error) {
	zw, err := pgzip.NewWriterLevel(w, gzipLevel)
	if err != nil {
		return nil, err
	}
	if err := zw.SetConcurrency(gzipBlock, max(2, runtime.GOMAXPROCS(0))); err != nil {
		return nil, err
	}
	return zw, nil
}

// compressorID names the gzip implementation in cache keys. Its output may change between
// its releases, and a workspace can resolve a newer release than this
// module's go.mod asks for, so the ID is a fingerprint of its output on a
// fixed sample rather than a version string (test binaries carry no module
// versions).
var compressorID = sync.OnceValue(func() string {
	h := sha256.New()
	zw, err := newGzipWriter(h)
	if err != nil {
		return "unknown"
	}
	v := newVocab(0)
	_, _ = io.CopyN(zw, io.MultiReader(io.LimitReader(v.sourceReader(newRNG(1)), 96<<10), io.LimitReader(randReader{newRNG(2)}, 8<<10)), 104<<10)
	_ = zw.Close()
	return fmt.Sprintf("gzip level %d fingerprint %x", gzipLevel, h.Sum(nil)[:8])
})

// layerMeta is the sidecar of a cached blob.
type layerMeta struct {
	Key              string `json:"key"`
	MediaType        string `json:"mediaType"`
	Digest           string `json:"digest"`
	DiffID           string `json:"diffID"`
	Size             int64  `json:"size"`
	UncompressedSize int64  `json:"uncompressedSize"`
}

func cacheKey(l Layer, env *buildEnv) (string, error) {
	k := struct {
		Version    int
		Compressor string
		Layer      Layer
		Busybox    string `json:",omitempty"`
	}{genVersion, compressorID(), l, ""}
	if l.Uncompressed {
		k.Compressor = "none"
	}
	if l.Kind == Busybox {
		if env.busybox == nil {
			return "", ErrNoBusybox
		}
		k.Busybox = env.busybox.sha256
	}
	b, err := json.Marshal(k)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidSpec, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// DefaultCacheDir is $HERMES_CACHE/imagegen, or ~/.cache/hermes/imagegen.
func DefaultCacheDir() string {
	if d := os.Getenv("HERMES_CACHE"); d != "" {
		return filepath.Join(d, "imagegen")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "hermes-cache", "imagegen")
	}
	return filepath.Join(home, ".cache", "hermes", "imagegen")
}

// rehashLimit: cached blobs up to this size are re-hashed before reuse (a
// fraction of a second); larger ones are checked by size, and the registry
// verifies their digest on push anyway.
const rehashLimit = 256 << 20

// buildLayer returns l's blob from the cache, generating it first if needed.
func buildLayer(l Layer, env *buildEnv, dir string) (*fileLayer, error) {
	key, err := cacheKey(l, env)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("imagegen cache: %w", err)
	}
	blob := filepath.Join(dir, key+".blob")
	metaPath := filepath.Join(dir, key+".json")
	if fl, err := openCached(key, blob, metaPath); err == nil {
		return fl, nil
	}
	tmp, err := os.CreateTemp(dir, key+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("imagegen cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	m, err := generate(tmp, l, env)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	m.Key = key
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return nil, fmt.Errorf("imagegen cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), blob); err != nil {
		return nil, fmt.Errorf("imagegen cache: %w", err)
	}
	if err := writeMeta(dir, metaPath, m); err != nil {
		return nil, fmt.Errorf("imagegen cache: %w", err)
	}
	return newFileLayer(blob, m)
}

// writeMeta writes the sidecar through a unique temporary file, so
// concurrent builders of the same layer (parallel tests, several processes)
// never see a half-written one.
func writeMeta(dir, metaPath string, m layerMeta) error {
	mb, err := json.Marshal(m)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, filepath.Base(metaPath)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(mb)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), metaPath)
	}
	return err
}

var errStale = errors.New("stale cache entry")

func openCached(key, blob, metaPath string) (*fileLayer, error) {
	mb, err := os.ReadFile(metaPath)
	if err != nil {
		return nil, err
	}
	var m layerMeta
	if err := json.Unmarshal(mb, &m); err != nil || m.Key != key {
		return nil, errStale
	}
	fi, err := os.Stat(blob)
	if err != nil || fi.Size() != m.Size {
		return nil, errStale
	}
	if m.Size <= rehashLimit {
		f, err := os.Open(blob)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil || "sha256:"+hex.EncodeToString(h.Sum(nil)) != m.Digest {
			return nil, errStale
		}
	}
	return newFileLayer(blob, m)
}

// generate streams l's tar through gzip (unless Uncompressed) into f. The
// tar is produced on one goroutine and compressed on another, so the two
// stages use both cores.
func generate(f io.Writer, l Layer, env *buildEnv) (layerMeta, error) {
	diff := &hashCounter{h: sha256.New()}
	p := newBufPipe(4, 1<<20)
	prodErr := make(chan error, 1)
	go func() {
		err := writeLayerTar(io.MultiWriter(diff, p), l, env)
		if err == nil {
			err = p.flush()
		}
		p.closeWrite()
		prodErr <- err
	}()

	blob := &hashCounter{h: sha256.New()}
	bw := bufio.NewWriterSize(io.MultiWriter(f, blob), 1<<20)
	var sink io.Writer = bw
	var zw *pgzip.Writer
	if !l.Uncompressed {
		var err error
		if zw, err = newGzipWriter(bw); err != nil {
			return layerMeta{}, err
		}
		sink = zw
	}
	consErr := p.drain(sink)
	if consErr == nil && zw != nil {
		consErr = zw.Close()
	}
	if consErr == nil {
		consErr = bw.Flush()
	}
	if consErr != nil {
		p.abort()
	}
	if err := errors.Join(<-prodErr, consErr); err != nil {
		return layerMeta{}, fmt.Errorf("generate layer: %w", err)
	}
	m := layerMeta{
		MediaType:        string(types.OCILayer),
		Digest:           blob.digest(),
		DiffID:           diff.digest(),
		Size:             blob.n,
		UncompressedSize: diff.n,
	}
	if l.Uncompressed {
		m.MediaType = string(types.OCIUncompressedLayer)
	}
	return m, nil
}

type hashCounter struct {
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

func (c *hashCounter) digest() string { return "sha256:" + hex.EncodeToString(c.h.Sum(nil)) }

// bufPipe hands fixed-size buffers from a producer to a consumer goroutine,
// a few at a time, so generation and compression overlap without holding
// more than a few MiB.
type bufPipe struct {
	full, free chan []byte
	done       chan struct{}
	stop       sync.Once
	cur        []byte
}

var errAborted = errors.New("consumer stopped")

func newBufPipe(n, size int) *bufPipe {
	p := &bufPipe{full: make(chan []byte, n), free: make(chan []byte, n+1), done: make(chan struct{})}
	for i := 0; i < n+1; i++ {
		p.free <- make([]byte, 0, size)
	}
	return p
}

func (p *bufPipe) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if p.cur == nil {
			select {
			case p.cur = <-p.free:
				p.cur = p.cur[:0]
			case <-p.done:
				return n - len(b), errAborted
			}
		}
		k := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur = p.cur[:len(p.cur)+k]
		b = b[k:]
		if len(p.cur) == cap(p.cur) {
			if err := p.flush(); err != nil {
				return n - len(b), err
			}
		}
	}
	return n, nil
}

func (p *bufPipe) flush() error {
	if len(p.cur) == 0 {
		return nil
	}
	select {
	case p.full <- p.cur:
		p.cur = nil
		return nil
	case <-p.done:
		return errAborted
	}
}

func (p *bufPipe) closeWrite() { close(p.full) }

// abort tells a producer blocked in Write to give up.
func (p *bufPipe) abort() { p.stop.Do(func() { close(p.done) }) }

// drain writes every buffer to w until the producer closes the pipe; after
// an error it keeps receiving (discarding) until abort is seen by the
// producer.
func (p *bufPipe) drain(w io.Writer) error {
	for b := range p.full {
		if _, err := w.Write(b); err != nil {
			p.abort()
			for range p.full {
			}
			return err
		}
		p.free <- b
	}
	return nil
}

// fileLayer is a v1.Layer backed by a cached blob file.
type fileLayer struct {
	path           string
	meta           layerMeta
	digest, diffID v1.Hash
}

var _ v1.Layer = (*fileLayer)(nil)

func newFileLayer(path string, m layerMeta) (*fileLayer, error) {
	d, err := v1.NewHash(m.Digest)
	if err != nil {
		return nil, err
	}
	di, err := v1.NewHash(m.DiffID)
	if err != nil {
		return nil, err
	}
	return &fileLayer{path: path, meta: m, digest: d, diffID: di}, nil
}

func (l *fileLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)     { return l.meta.Size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.meta.MediaType), nil
}
func (l *fileLayer) Compressed() (io.ReadCloser, error) { return os.Open(l.path) }
func (l *fileLayer) UncompressedSize() (int64, error)   { return l.meta.UncompressedSize, nil }

func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	if types.MediaType(l.meta.MediaType) == types.OCIUncompressedLayer {
		return f, nil
	}
	zr, err := kgzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", l.path, err)
	}
	return &gzipFile{zr, f}, nil
}

type gzipFile struct {
	*kgzip.Reader
	f *os.File
}

func (g *gzipFile) Close() error { return errors.Join(g.Reader.Close(), g.f.Close()) }
