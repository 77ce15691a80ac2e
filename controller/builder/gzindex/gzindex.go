// Package gzindex builds the zTOC of a gzip-compressed tar layer in a single
// pass over a stream, with no temporary file.
//
// soci-snapshotter's ztoc.Builder needs the layer as a file and reads it
// three times: a C pass over zlib for the checkpoints, a Go gzip+tar pass
// for the file list, and a pass hashing each span. Here one zlib inflate
// feeds all three: the checkpoints are taken as the stream inflates (same
// zlib calls on the same 16 KiB chunks, so the same block boundaries and
// windows), archive/tar reads the inflated bytes, and the compressed bytes
// are hashed per span as they go by. The result serializes (ztoc.Marshal) to
// exactly the bytes soci's BuildZtoc produces for the same blob; the tests
// hold that against soci itself.
package gzindex

// #cgo CFLAGS: -O2
// #cgo LDFLAGS: -l:libz.a
// #include "gzindex.h"
import "C"

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"unsafe"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	"github.com/opencontainers/go-digest"
)

// Sizes of the serialized checkpoints' header and of one record (gzindex.h).
const (
	headerSize = C.HERMES_GZ_HEADER
	recordSize = C.HERMES_GZ_RECORD
)

// ErrFormat is wrapped by errors about the layer's content: not gzip, not
// tar, or an entry type zTOCs cannot describe.
var ErrFormat = errors.New("invalid gzip tar layer")

// Options are the settings of a zTOC.
type Options struct {
	// SpanSize is the uncompressed distance between checkpoints.
	SpanSize int64
	// BuildToolIdentifier is recorded in the zTOC.
	BuildToolIdentifier string
	// AlignFilesFrom, if positive, puts checkpoints at the last block
	// boundary before the data of every regular file of at least this many
	// bytes and at the first boundary after it, so reading such a file
	// whole fetches little more than the file: no part of the span before
	// it, no part of the span after it. Zero leaves checkpoints every
	// SpanSize only, as soci places them.
	AlignFilesFrom int64
}

// Build reads a gzip-compressed tar stream to its end and returns its zTOC
// with checkpoints every spanSize uncompressed bytes, byte for byte the
// zTOC soci's BuildZtoc makes. Errors reading r are returned as they are.
func Build(r io.Reader, spanSize int64, buildToolIdentifier string) (*ztoc.Ztoc, error) {
	return BuildWith(r, Options{SpanSize: spanSize, BuildToolIdentifier: buildToolIdentifier})
}

// BuildWith is Build with all options.
func BuildWith(r io.Reader, o Options) (*ztoc.Ztoc, error) {
	z, ix, err := build(r, o, nil)
	if err != nil {
		return nil, err
	}
	z.Checkpoints = ix.cps
	return z, nil
}

// Spill is where BuildSpilled writes checkpoints, and reads them back from.
// A temp file (*os.File) is one.
type Spill interface {
	io.Writer
	io.ReaderAt
}

// Spilled is a zTOC whose checkpoints are in a Spill.
type Spilled struct {
	// Ztoc is the zTOC without its checkpoints (Checkpoints is nil).
	Ztoc    *ztoc.Ztoc
	header  []byte // the checkpoints' header; the records are in spill
	spill   io.ReaderAt
	records int64 // bytes of records in spill, from offset 0
}

// Checkpoints returns a reader of the zTOC's checkpoints, the bytes
// ztoc.Ztoc.Checkpoints would hold, and how many there are.
func (s *Spilled) Checkpoints() (io.Reader, int64) {
	return io.MultiReader(bytes.NewReader(s.header), io.NewSectionReader(s.spill, 0, s.records)), int64(len(s.header)) + s.records
}

// BuildSpilled is BuildWith, except that the checkpoints, one 32 KiB
// window each and so the bulk of a large layer's zTOC, are written to
// spill (from its current position, which must be 0) as they are produced
// instead of staying in memory: memory does not grow with the layer. An
// error writing spill wraps ErrSpill.
func BuildSpilled(r io.Reader, o Options, spill Spill) (*Spilled, error) {
	z, ix, err := build(r, o, spill)
	if err != nil {
		return nil, err
	}
	return &Spilled{Ztoc: z, header: bytes.Clone(ix.cps[:C.HERMES_GZ_HEADER]), spill: spill, records: ix.spilled}, nil
}

// ErrSpill is wrapped by errors writing checkpoints to a Spill.
var ErrSpill = errors.New("spill checkpoints")

// build indexes r; the checkpoints are in ix.cps, or, with spill, their
// header is and the records are in spill.
func build(r io.Reader, o Options, spill io.Writer) (*ztoc.Ztoc, *inflater, error) {
	align := o.AlignFilesFrom > 0
	g := C.hermes_gz_new(C.int64_t(o.SpanSize), C.int(btoi(align)))
	if g == nil {
		return nil, nil, errors.New("gzindex: out of memory")
	}
	defer C.hermes_gz_free(g)
	ix := &inflater{
		g:     g,
		src:   r,
		cps:   make([]byte, C.HERMES_GZ_HEADER, C.HERMES_GZ_HEADER+8*C.HERMES_GZ_RECORD),
		in:    unsafe.Slice((*byte)(unsafe.Pointer(&g.in[0])), C.HERMES_GZ_CHUNK),
		out:   unsafe.Slice((*byte)(unsafe.Pointer(&g.out[0])), C.HERMES_GZ_OUT),
		spill: spill,
	}
	var onFile func(*ztoc.FileMetadata)
	largeEnd := int64(-1) // where the data of the entry before, a large file, ends
	if align {
		onFile = func(f *ztoc.FileMetadata) {
			start := int64(-1)
			if f.Type == "reg" && int64(f.UncompressedSize) >= o.AlignFilesFrom {
				start = int64(f.UncompressedOffset)
			}
			// The entry after a large file is the first time its end can
			// be placed: checkpoints must come in order, and one at this
			// entry's start may come before one at that end.
			if start >= 0 || largeEnd >= 0 {
				ix.align(start, largeEnd)
			}
			largeEnd = -1
			if start >= 0 {
				largeEnd = start + int64(f.UncompressedSize)
			}
		}
	}
	files, tarSize, err := tarMetadata(ix, onFile)
	if err != nil {
		return nil, nil, err
	}
	if largeEnd >= 0 {
		ix.align(-1, largeEnd)
	}
	// The tar reader stops at the end-of-archive marker; checkpoints and
	// span digests cover the whole blob.
	if err := ix.drain(); err != nil {
		return nil, nil, err
	}
	if err := ix.flush(); err != nil {
		return nil, nil, err
	}
	if ix.span != nil {
		ix.span.Write(ix.pend) // the last span ends with the blob
		ix.digests = append(ix.digests, digest.NewDigest(digest.SHA256, ix.span))
	}
	C.hermes_gz_header(g, (*C.uchar)(unsafe.Pointer(&ix.cps[0])))
	return &ztoc.Ztoc{
		Version:                 ztoc.Version09,
		BuildToolIdentifier:     o.BuildToolIdentifier,
		TOC:                     ztoc.TOC{FileMetadata: files},
		CompressedArchiveSize:   compression.Offset(ix.chunkEnd),
		UncompressedArchiveSize: compression.Offset(tarSize),
		CompressionInfo: ztoc.CompressionInfo{
			MaxSpanID:            compression.SpanID(g.count - 1),
			SpanDigests:          ix.digests,
			CompressionAlgorithm: compression.Gzip,
		},
	}, ix, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// inflater is an io.Reader of the uncompressed stream that records
// checkpoints and span digests as it goes.
type inflater struct {
	g    *C.hermes_gz
	src  io.Reader
	in   []byte // the C input chunk
	out  []byte // the C output buffer; out[r:w] is not yet read
	r, w int
	done bool
	err  error

	chunkEnd int64 // compressed bytes read so far; the last chunk is in `in`
	srcEOF   bool

	// cps is the serialized checkpoints: a header, then one record per
	// checkpoint, written by C into the free capacity. With spill, records
	// move there once turned into spans, and cps keeps the header and the
	// records from checkpoint number base on.
	cps     []byte
	seen    int32 // checkpoints turned into spans
	spill   io.Writer
	base    int32
	spilled int64 // bytes written to spill

	// Compressed bytes [pendStart, chunkEnd) are in pend, not yet hashed:
	// a checkpoint may still be placed among them (at a boundary already
	// passed, with alignment; or one byte back when a boundary falls
	// inside a byte). span has hashed the current span up to pendStart.
	pend      []byte
	pendStart int64
	buf       []byte    // pend's backing array
	span      hash.Hash // nil before the first checkpoint
	digests   []digest.Digest
}

func (ix *inflater) Read(p []byte) (int, error) {
	for ix.r == ix.w {
		if ix.err != nil {
			return 0, ix.err
		}
		if ix.done {
			return 0, io.EOF
		}
		ix.err = ix.advance()
	}
	n := copy(p, ix.out[ix.r:ix.w])
	ix.r += n
	return n, nil
}

// drain inflates the rest of the stream, discarding the output.
func (ix *inflater) drain() error {
	for !ix.done {
		if ix.err != nil {
			return ix.err
		}
		ix.r = ix.w
		ix.err = ix.advance()
	}
	return ix.err
}

// room makes space for n more checkpoint records and returns it.
func (ix *inflater) room(n int) []byte {
	if cap(ix.cps)-len(ix.cps) < n*C.HERMES_GZ_RECORD {
		// Doubling leaves less garbage behind than append's growth: the
		// checkpoints are the bulk of a large layer's zTOC.
		ix.cps = append(make([]byte, 0, 2*cap(ix.cps)+n*C.HERMES_GZ_RECORD), ix.cps...)
	}
	return ix.cps[len(ix.cps):cap(ix.cps)]
}

// advance runs inflate once more; the previous output must have been read.
func (ix *inflater) advance() error {
	room := ix.room(1)
	var used C.size_t
	ret := C.hermes_gz_step(ix.g, (*C.uchar)(unsafe.Pointer(&room[0])), C.size_t(len(room)), &used)
	ix.cps = ix.cps[:len(ix.cps)+int(used)]
	ix.r, ix.w = 0, int(ix.g.out_len)
	ix.checkpoints()
	if err := ix.flush(); err != nil {
		return err
	}
	ix.hashTo(int64(C.hermes_gz_safe(ix.g)))
	switch ret {
	case C.HERMES_GZ_OUTPUT, C.HERMES_GZ_CP_FULL:
		return nil
	case C.HERMES_GZ_NEED_INPUT:
		n, err := ix.readChunk()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w: gzip stream truncated at %d bytes: %w", ErrFormat, ix.chunkEnd, io.ErrUnexpectedEOF)
		}
		C.hermes_gz_input(ix.g, C.uint(n))
		return nil
	case C.HERMES_GZ_MEMBER_END:
		n, err := ix.readChunk()
		if err != nil {
			return err
		}
		if n == 0 {
			ix.done = true
			return nil
		}
		// Concatenated members (pigz, mgzip) continue the same stream.
		if rc := C.hermes_gz_next_member(ix.g); rc != C.Z_OK {
			return fmt.Errorf("%w: zlib error %d", ErrFormat, int(rc))
		}
		C.hermes_gz_input(ix.g, C.uint(n))
		return nil
	default:
		return fmt.Errorf("%w: zlib error %d at compressed offset %d", ErrFormat, int(ret), int64(ix.g.totin))
	}
}

// align asks for checkpoints at the block boundaries around a large file's
// data: the last one at or before start, the first one at or after end
// (either -1 for none).
func (ix *inflater) align(start, end int64) {
	room := ix.room(2)
	n := C.hermes_gz_align(ix.g, C.int64_t(start), C.int64_t(end), (*C.uchar)(unsafe.Pointer(&room[0])), C.size_t(len(room)))
	ix.cps = ix.cps[:len(ix.cps)+int(n)*C.HERMES_GZ_RECORD]
	ix.checkpoints()
}

// readChunk reads the next chunk into the C input buffer: full chunks until
// the end, as fread would.
func (ix *inflater) readChunk() (int, error) {
	if ix.srcEOF {
		return 0, nil
	}
	n, err := io.ReadFull(ix.src, ix.in)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		ix.srcEOF = true
	case err != nil:
		return 0, err
	}
	ix.chunkEnd += int64(n)
	ix.appendPending(ix.in[:n])
	return n, nil
}

// checkpoints turns checkpoints recorded since the last call into spans.
// Span i covers compressed bytes from checkpoint i (one byte earlier when
// the boundary falls inside a byte) up to checkpoint i+1, and the last span
// up to the end of the blob, as soci hashes them.
func (ix *inflater) checkpoints() {
	for ; ix.seen < int32(ix.g.count); ix.seen++ {
		rec := ix.cps[C.HERMES_GZ_HEADER+int(ix.seen-ix.base)*C.HERMES_GZ_RECORD:]
		in := int64(binary.LittleEndian.Uint64(rec))
		start := in
		if rec[16] != 0 { // bits of the byte before the boundary
			start--
		}
		if ix.span != nil {
			ix.span.Write(ix.pend[:in-ix.pendStart])
			ix.digests = append(ix.digests, digest.NewDigest(digest.SHA256, ix.span))
		}
		ix.span = sha256.New()
		ix.drop(start)
	}
}

// flush moves the records in cps to spill, if there is one. They must have
// been turned into spans (checkpoints reads them).
func (ix *inflater) flush() error {
	if ix.spill == nil || len(ix.cps) == C.HERMES_GZ_HEADER {
		return nil
	}
	n, err := ix.spill.Write(ix.cps[C.HERMES_GZ_HEADER:])
	ix.spilled += int64(n)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSpill, err)
	}
	ix.cps = ix.cps[:C.HERMES_GZ_HEADER]
	ix.base = ix.seen
	return nil
}

// hashTo hashes pending bytes before off into the current span (or drops
// them before the first checkpoint).
func (ix *inflater) hashTo(off int64) {
	off = min(off, ix.chunkEnd)
	if off <= ix.pendStart {
		return
	}
	if ix.span != nil {
		ix.span.Write(ix.pend[:off-ix.pendStart])
	}
	ix.drop(off)
}

// drop forgets pending bytes before off.
func (ix *inflater) drop(off int64) {
	ix.pend = ix.pend[off-ix.pendStart:]
	ix.pendStart = off
}

// appendPending adds a chunk to the pending bytes, moving them to the
// front of their buffer, or to one twice as big, when the end is reached.
func (ix *inflater) appendPending(b []byte) {
	if len(ix.pend)+len(b) > cap(ix.pend) {
		if need := len(ix.pend) + len(b); need > cap(ix.buf)/2 {
			ix.buf = make([]byte, 2*need)
		}
		ix.pend = ix.buf[:copy(ix.buf[:cap(ix.buf)], ix.pend)]
	}
	ix.pend = append(ix.pend, b...)
}

// fileTypes are the zTOC names of the tar entry types it can describe.
var fileTypes = map[byte]string{
	tar.TypeReg: "reg", tar.TypeLink: "hardlink", tar.TypeSymlink: "symlink", tar.TypeDir: "dir",
	tar.TypeChar: "char", tar.TypeBlock: "block", tar.TypeFifo: "fifo",
}

// TarMetadata lists the entries of an uncompressed tar stream with their
// offsets, as a zTOC records them, and returns how many bytes the tar
// reader consumed up to the end-of-archive marker.
func TarMetadata(r io.Reader) ([]ztoc.FileMetadata, int64, error) {
	return tarMetadata(r, nil)
}

// tarMetadata is TarMetadata, calling onFile (if set) with each entry as
// soon as its header is read, before any of its data.
func tarMetadata(r io.Reader, onFile func(*ztoc.FileMetadata)) ([]ztoc.FileMetadata, int64, error) {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	var files []ztoc.FileMetadata
	var header int64 // the first header is at offset 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, cr.n, nil
		}
		if err != nil {
			// archive/tar returns the source's own errors unchanged (a
			// network error stays one) and its format errors otherwise.
			if errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrFieldTooLong) || err == io.ErrUnexpectedEOF {
				return nil, 0, fmt.Errorf("%w: tar: %w", ErrFormat, err)
			}
			return nil, 0, err
		}
		typ, ok := fileTypes[h.Typeflag]
		if !ok {
			return nil, 0, fmt.Errorf("%w: tar entry %q has unsupported type %q", ErrFormat, h.Name, h.Typeflag)
		}
		f := ztoc.FileMetadata{
			Name:               h.Name,
			Type:               typ,
			UncompressedOffset: compression.Offset(cr.n),
			UncompressedSize:   compression.Offset(h.Size),
			TarHeaderOffset:    compression.Offset(header),
			Linkname:           h.Linkname,
			Mode:               h.Mode,
			UID:                h.Uid,
			GID:                h.Gid,
			Uname:              h.Uname,
			Gname:              h.Gname,
			ModTime:            h.ModTime,
			Devmajor:           h.Devmajor,
			Devminor:           h.Devminor,
			PAXHeaders:         h.PAXRecords,
		}
		if onFile != nil {
			onFile(&f)
		}
		files = append(files, f)
		header = int64(ztoc.AlignToTarBlock(f.UncompressedOffset + f.UncompressedSize))
	}
}

// countingReader counts the bytes read through it. It deliberately has no
// Seek method: archive/tar then skips file contents by reading them, so the
// count is the position in the stream.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
