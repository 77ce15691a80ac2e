package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/controller/builder/gzindex"
	"github.com/hermes-oci/hermes/controller/builder/ztocfb"
)

// progressStep is how many fetched bytes pass between two progress events.
const progressStep = 4 << 20

// layer builds one layer's zTOC and keeps it serialized in a temp file for
// the push. gzip layers are indexed in one pass as they stream from the
// origin (gzindex); plain tar layers, and every layer when
// Config.StageLayers is set, go through a temp file and soci's own builder.
func (r *run) layer(ctx context.Context, l ocispec.Descriptor, algo string, report func(Progress)) (*builtLayer, error) {
	if algo == compression.Gzip && !r.b.cfg.StageLayers {
		return r.streamLayer(ctx, l, report)
	}
	return r.stagedLayer(ctx, l, algo, report)
}

// streamLayer indexes a gzip layer while it downloads: no temp file for the
// layer, one inflate, the digest verified before the zTOC is kept. The
// checkpoints, a 32 KiB window each and so the bulk of a large layer's
// zTOC, go to a temp file as they are made, so that memory does not grow
// with the layer.
func (r *run) streamLayer(ctx context.Context, l ocispec.Descriptor, report func(Progress)) (*builtLayer, error) {
	rc, vr, err := r.open(ctx, l, report)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	spill, err := os.CreateTemp(r.dir, "checkpoints-*")
	if err != nil {
		return nil, fmt.Errorf("temp file: %w", err)
	}
	defer os.Remove(spill.Name())
	defer spill.Close()

	report(Progress{State: LayerFetching})
	s, err := gzindex.BuildSpilled(vr, gzindex.Options{
		SpanSize: r.settings.SpanSize, BuildToolIdentifier: r.settings.BuildToolIdentifier, AlignFilesFrom: max(r.settings.AlignFilesFrom, 0),
	}, spill)
	if errors.Is(err, gzindex.ErrFormat) {
		// Damaged in transit or damaged at the origin? The digest says.
		if _, cerr := io.Copy(io.Discard, vr); cerr != nil {
			return nil, fetchError(ctx, cerr)
		}
		if verr := vr.verify(); verr != nil {
			return nil, verr
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidLayer, err)
	}
	if errors.Is(err, gzindex.ErrSpill) {
		return nil, fmt.Errorf("temp file: %w", err)
	}
	if err != nil {
		return nil, fetchError(ctx, err)
	}
	if err := vr.verify(); err != nil {
		return nil, err
	}
	report(Progress{State: LayerIndexing, Done: l.Size})
	cps, n := s.Checkpoints()
	return r.keepZtoc(s.Ztoc, cps, n)
}

// stagedLayer fetches the layer into a temp file, verifying its digest while
// it streams, and builds the zTOC from the file with soci's ztoc package. The
// file is removed before it returns, whatever happens.
func (r *run) stagedLayer(ctx context.Context, l ocispec.Descriptor, algo string, report func(Progress)) (*builtLayer, error) {
	f, err := os.CreateTemp(r.dir, "layer-*")
	if err != nil {
		return nil, fmt.Errorf("temp file: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()

	report(Progress{State: LayerFetching})
	if err := r.fetch(ctx, l, f, report); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("temp file: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	report(Progress{State: LayerIndexing, Done: l.Size})
	z, err := ztoc.NewBuilder(r.settings.BuildToolIdentifier).BuildZtoc(f.Name(), r.settings.SpanSize, ztoc.WithCompression(algo))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidLayer, err)
	}
	return r.keepZtoc(z, bytes.NewReader(z.Checkpoints), int64(len(z.Checkpoints)))
}

// keepZtoc serializes z, with the n bytes of checkpoints read from cps
// (z.Checkpoints is ignored), into the build's temp dir for the push. It
// streams (ztocfb): the checkpoints are copied through, never held whole,
// unlike soci's Marshal, which builds the whole flatbuffer in memory; the
// bytes are the same.
func (r *run) keepZtoc(z *ztoc.Ztoc, cps io.Reader, n int64) (*builtLayer, error) {
	out, err := os.CreateTemp(r.dir, "ztoc-*")
	if err != nil {
		return nil, fmt.Errorf("temp file: %w", err)
	}
	desc, err := ztocfb.Write(out, z, cps, n)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("temp file: %w", cerr)
	}
	if err != nil {
		os.Remove(out.Name())
		return nil, fmt.Errorf("serialize zTOC: %w", err)
	}
	return &builtLayer{ztoc: desc, path: out.Name(), disableXattrs: shouldDisableXattrs(z)}, nil
}

// open starts downloading blob l and returns the body and a reader over it
// that verifies size and digest.
func (r *run) open(ctx context.Context, l ocispec.Descriptor, report func(Progress)) (io.ReadCloser, *verifyingReader, error) {
	if err := l.Digest.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%w: layer digest: %w", ErrInvalidRequest, err)
	}
	rc, err := r.origin.Blobs().Fetch(ctx, l)
	if err != nil {
		return nil, nil, classify(ctx, origin, err)
	}
	return rc, newVerifyingReader(rc, l, func(done int64) { report(Progress{State: LayerFetching, Done: done}) }), nil
}

// fetch copies the blob l into w, failing with ErrDigestMismatch when the
// bytes are not what the descriptor says.
func (r *run) fetch(ctx context.Context, l ocispec.Descriptor, w io.Writer, report func(Progress)) error {
	rc, vr, err := r.open(ctx, l, report)
	if err != nil {
		return err
	}
	defer rc.Close()
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(w, vr, buf); err != nil {
		return fetchError(ctx, err)
	}
	return vr.verify()
}

// fetchError classifies an error met while reading a blob body: a cut
// connection is an unavailable origin.
func fetchError(ctx context.Context, err error) error {
	if errors.Is(err, ErrDigestMismatch) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return classify(ctx, origin, err)
}

// verifyingReader hashes what it reads and refuses to read past the
// descriptor's size; verify checks size and digest at the end.
type verifyingReader struct {
	r        io.Reader
	desc     ocispec.Descriptor
	digester digest.Digester
	n        int64
	last     int64
	report   func(done int64)
}

func newVerifyingReader(r io.Reader, desc ocispec.Descriptor, report func(int64)) *verifyingReader {
	return &verifyingReader{r: r, desc: desc, digester: desc.Digest.Algorithm().Digester(), report: report}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if rem := v.desc.Size - v.n + 1; int64(len(p)) > rem {
		// One byte past the size is enough to notice a longer blob.
		p = p[:rem]
	}
	n, err := v.r.Read(p)
	if n > 0 {
		v.digester.Hash().Write(p[:n])
		v.n += int64(n)
		if v.n > v.desc.Size {
			return n, fmt.Errorf("blob %s: %w: more than %d bytes", v.desc.Digest, ErrDigestMismatch, v.desc.Size)
		}
		if v.report != nil && (v.n-v.last >= progressStep || v.n == v.desc.Size) {
			v.last = v.n
			v.report(v.n)
		}
	}
	switch {
	case err == io.EOF && v.n < v.desc.Size:
		err = fmt.Errorf("blob %s: %d of %d bytes: %w", v.desc.Digest, v.n, v.desc.Size, io.ErrUnexpectedEOF)
	case err != nil && err != io.EOF:
		// Wrapped, so that no reader mistakes a cut connection (which
		// net/http reports as io.ErrUnexpectedEOF) for the end of the blob.
		err = fmt.Errorf("blob %s after %d of %d bytes: %w", v.desc.Digest, v.n, v.desc.Size, err)
	}
	return n, err
}

// verify reports whether everything read matched the descriptor.
func (v *verifyingReader) verify() error {
	if v.n != v.desc.Size {
		return fmt.Errorf("blob %s: %w: %d bytes, want %d", v.desc.Digest, ErrDigestMismatch, v.n, v.desc.Size)
	}
	if got := v.digester.Digest(); got != v.desc.Digest {
		return fmt.Errorf("blob %s: %w: got %s", v.desc.Digest, ErrDigestMismatch, got)
	}
	return nil
}
