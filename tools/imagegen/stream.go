package imagegen

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// StreamedLayer returns l as a gzip layer generated anew every time it is
// read and never stored, for layers too big to keep on disk (the build
// benchmark's 20 GiB case). Its tar is the one Image generates for l, but
// it is gzipped into stored deflate blocks, which costs next to no CPU
// (incompressible content ends up in stored blocks at any level anyway),
// so its blob and digest are not Image's. Only the digests and sizes are
// cached (<key>.json in the cache directory): the first call reads the
// layer once to compute them, later calls return at once.
func StreamedLayer(l Layer, opts ...Option) (v1.Layer, error) {
	o := buildOptions(opts)
	env := &buildEnv{}
	if l.Kind == Busybox {
		var err error
		if env.busybox, err = loadBusybox(o.busybox); err != nil {
			return nil, err
		}
	}
	if l.Uncompressed {
		return nil, fmt.Errorf("%w: a streamed layer is gzip", ErrInvalidSpec)
	}
	key, err := cacheKey(l, env)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte("streamed " + storedID() + " " + key))
	key = hex.EncodeToString(sum[:])
	if err := os.MkdirAll(o.cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("imagegen cache: %w", err)
	}
	metaPath := filepath.Join(o.cacheDir, key+".json")
	var m layerMeta
	if b, err := os.ReadFile(metaPath); err == nil && json.Unmarshal(b, &m) == nil && m.Key == key {
		return newStreamedLayer(l, env, m)
	}
	if m, err = streamBlob(io.Discard, l, env, true); err != nil {
		return nil, err
	}
	m.Key = key
	if err := writeMeta(o.cacheDir, metaPath, m); err != nil {
		return nil, fmt.Errorf("imagegen cache: %w", err)
	}
	return newStreamedLayer(l, env, m)
}

// storedID fingerprints the stored-block compressor, as compressorID does
// the default one: cached digests must not outlive a change in its output.
var storedID = sync.OnceValue(func() string {
	h := sha256.New()
	sample := bytes.Repeat([]byte("hermes "), 40000)
	if _, err := storedGzip(h, func(zw io.Writer) error { _, err := zw.Write(sample); return err }); err != nil {
		return "unknown"
	}
	return fmt.Sprintf("stored gzip fingerprint %x", h.Sum(nil)[:8])
})

// streamBlob writes l's streamed blob to w: the tar generated on one
// goroutine, gzipped (and, with hash, hashed) on another.
func streamBlob(w io.Writer, l Layer, env *buildEnv, hash bool) (layerMeta, error) {
	diff := &hashCounter{h: sha256.New()}
	p := newBufPipe(4, 1<<20)
	prodErr := make(chan error, 1)
	go func() {
		var tw io.Writer = p
		if hash {
			tw = io.MultiWriter(diff, p)
		}
		err := writeLayerTar(tw, l, env)
		if err == nil {
			err = p.flush()
		}
		p.closeWrite()
		prodErr <- err
	}()
	blob := &hashCounter{h: sha256.New()}
	out := w
	if hash {
		out = io.MultiWriter(w, blob)
	}
	n, consErr := storedGzip(out, p.drain)
	if consErr != nil {
		p.abort()
	}
	if err := errors.Join(<-prodErr, consErr); err != nil {
		return layerMeta{}, fmt.Errorf("generate layer: %w", err)
	}
	return layerMeta{
		MediaType: string(types.OCILayer), Digest: blob.digest(), DiffID: diff.digest(),
		Size: n, UncompressedSize: diff.n,
	}, nil
}

// storedGzip gzips what feed writes into stored blocks and returns the
// compressed size.
func storedGzip(w io.Writer, feed func(io.Writer) error) (int64, error) {
	cw := &hashCounter{h: nopHash{}}
	zw, err := gzip.NewWriterLevel(io.MultiWriter(w, cw), gzip.NoCompression)
	if err != nil {
		return 0, err
	}
	if err = feed(zw); err == nil {
		err = zw.Close()
	}
	return cw.n, err
}

// nopHash lets hashCounter count without hashing.
type nopHash struct{}

func (nopHash) Write(p []byte) (int, error) { return len(p), nil }
func (nopHash) Sum(b []byte) []byte         { return b }
func (nopHash) Reset()                      {}
func (nopHash) Size() int                   { return 0 }
func (nopHash) BlockSize() int              { return 1 }

// streamedLayer is a v1.Layer whose blob is generated on every read.
type streamedLayer struct {
	l              Layer
	env            *buildEnv
	meta           layerMeta
	digest, diffID v1.Hash
}

var _ v1.Layer = (*streamedLayer)(nil)

func newStreamedLayer(l Layer, env *buildEnv, m layerMeta) (*streamedLayer, error) {
	d, err := v1.NewHash(m.Digest)
	if err != nil {
		return nil, err
	}
	di, err := v1.NewHash(m.DiffID)
	if err != nil {
		return nil, err
	}
	return &streamedLayer{l: l, env: env, meta: m, digest: d, diffID: di}, nil
}

func (s *streamedLayer) Digest() (v1.Hash, error) { return s.digest, nil }
func (s *streamedLayer) DiffID() (v1.Hash, error) { return s.diffID, nil }
func (s *streamedLayer) Size() (int64, error)     { return s.meta.Size, nil }
func (s *streamedLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(s.meta.MediaType), nil
}

// UncompressedSize is what the tar's size is, as cached.
func (s *streamedLayer) UncompressedSize() (int64, error) { return s.meta.UncompressedSize, nil }

// Compressed generates the blob into a pipe; closing the reader early stops
// the generation.
func (s *streamedLayer) Compressed() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		_, err := streamBlob(pw, s.l, s.env, false)
		pw.CloseWithError(err)
	}()
	return pr, nil
}

func (s *streamedLayer) Uncompressed() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeLayerTar(pw, s.l, s.env)) }()
	return pr, nil
}
