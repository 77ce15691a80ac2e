// Package ztocfb serializes zTOCs to exactly the bytes soci-snapshotter's
// ztoc.Marshal produces, without holding the checkpoints in memory.
//
// The checkpoints (a 32 KiB window each) are the bulk of a large layer's
// zTOC, and ztoc.Marshal needs them in memory and copies them into a
// flatbuffers builder that grows by doubling. Write reads them from a
// reader (a spill file) and copies them straight to the output; the digest
// is computed as the bytes go out.
//
// How the bytes stay soci's: the flatbuffers builder writes back to front,
// and soci creates the checkpoint vector after the file list and before the
// span digests and the two root tables, so the vector lands between a head
// (root, tables, span digests) and a tail (file list, version, build tool).
// Write runs the same builder calls in the same order with a stand-in
// vector of n mod 8 bytes: every alignment the builder computes depends on
// offsets mod 8 only (nothing in a zTOC aligns to more), so head and tail
// come out as they would with all n bytes. Then the vector's length and the
// three root fields that point across it into the tail are corrected, and
// the real checkpoints are streamed in the stand-in's place. The tests hold
// the result against ztoc.Marshal for zTOCs of many shapes.
package ztocfb

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/awslabs/soci-snapshotter/ztoc"
	fbs "github.com/awslabs/soci-snapshotter/ztoc/fbs/ztoc"
	flatbuffers "github.com/google/flatbuffers/go"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxSize is about the largest zTOC soci's ztoc.Marshal can produce (its
// flatbuffers builder cannot grow its buffer past 1 GiB, and keeps a few
// bytes of it free). Larger ones are refused here too, so that every zTOC
// Hermes writes is one soci could have written.
const MaxSize = 1<<30 - 64

// copyBuffer is the chunk the checkpoints are copied in.
const copyBuffer = 1 << 20

// Slots of the root table's fields that refer to the tail (see the package
// comment), in the order of the schema's fields.
const (
	slotVersion             = 0
	slotBuildToolIdentifier = 1
	slotToc                 = 4
	slotCheckpoints         = 3 // in CompressionInfo
)

// Write writes z as ztoc.Marshal would serialize it with z.Checkpoints set
// to the n bytes read from checkpoints, and returns the digest and size of
// what it wrote. z.Checkpoints itself is ignored.
func Write(w io.Writer, z *ztoc.Ztoc, checkpoints io.Reader, n int64) (desc ocispec.Descriptor, err error) {
	if n < 0 {
		return desc, fmt.Errorf("zTOC: %d bytes of checkpoints", n)
	}
	stand := n % 8
	buf, vec, err := frame(z, stand, n)
	if err != nil {
		return desc, err
	}
	size := int64(len(buf)) - stand + n
	if size > MaxSize {
		return desc, fmt.Errorf("zTOC of %d bytes: larger than soci can serialize (%d)", size, MaxSize)
	}
	h := sha256.New()
	out := io.MultiWriter(w, h)
	if _, err := out.Write(buf[:vec]); err != nil {
		return desc, err
	}
	copied, err := io.CopyBuffer(out, io.LimitReader(checkpoints, n), make([]byte, min(copyBuffer, max(n, 1))))
	if err != nil {
		return desc, err
	}
	if copied != n {
		return desc, fmt.Errorf("zTOC: %d bytes of checkpoints, want %d: %w", copied, n, io.ErrUnexpectedEOF)
	}
	if _, err := out.Write(buf[vec+int(stand):]); err != nil {
		return desc, err
	}
	return ocispec.Descriptor{Digest: digest.NewDigest(digest.SHA256, h), Size: size}, nil
}

// frame builds z's flatbuffer with a stand-in checkpoint vector of stand
// bytes, corrected for n, and returns it and where the vector's bytes
// begin.
func frame(z *ztoc.Ztoc, stand, n int64) (buf []byte, vec int, err error) {
	defer func() {
		// The builder panics on buffers past 2 GiB, as soci's Marshal does.
		if r := recover(); r != nil {
			buf, err = nil, fmt.Errorf("cannot serialize zTOC: %v", r)
		}
	}()
	b := flatbuffers.NewBuilder(estimate(z))

	// The tail: created first, so it ends up last.
	version := b.CreateString(string(z.Version))
	tool := b.CreateString(z.BuildToolIdentifier)
	toc := fileList(b, z.FileMetadata)

	cps := b.CreateByteVector(make([]byte, stand))

	// The head.
	digests := make([]flatbuffers.UOffsetT, len(z.SpanDigests))
	for i, d := range z.SpanDigests {
		digests[i] = b.CreateString(d.String())
	}
	fbs.CompressionInfoStartSpanDigestsVector(b, len(digests))
	for i := len(digests) - 1; i >= 0; i-- {
		b.PrependUOffsetT(digests[i])
	}
	spans := b.EndVector(len(digests))
	fbs.CompressionInfoStart(b)
	fbs.CompressionInfoAddMaxSpanId(b, int32(z.MaxSpanID))
	fbs.CompressionInfoAddSpanDigests(b, spans)
	fbs.CompressionInfoAddCheckpoints(b, cps)
	if z.CompressionAlgorithm != "" {
		algo, err := algorithm(z.CompressionAlgorithm)
		if err != nil {
			return nil, 0, err
		}
		fbs.CompressionInfoAddCompressionAlgorithm(b, algo)
	}
	info := fbs.CompressionInfoEnd(b)
	fbs.ZtocStart(b)
	fbs.ZtocAddVersion(b, version)
	fbs.ZtocAddBuildToolIdentifier(b, tool)
	fbs.ZtocAddToc(b, toc)
	fbs.ZtocAddCompressedArchiveSize(b, int64(z.CompressedArchiveSize))
	fbs.ZtocAddUncompressedArchiveSize(b, int64(z.UncompressedArchiveSize))
	fbs.ZtocAddCompressionInfo(b, info)
	root := fbs.ZtocEnd(b)
	b.Finish(root)
	buf = b.FinishedBytes()

	// Offsets from the builder count from the end of the buffer.
	pos := func(off flatbuffers.UOffsetT) int { return len(buf) - int(off) }
	vec = pos(cps) + flatbuffers.SizeUOffsetT
	if err := patch(buf, pos(root), pos(info), vec, stand, n); err != nil {
		return nil, 0, err
	}
	return buf, vec, nil
}

// errLayout means the builder laid the zTOC out otherwise than this package
// expects; it would be a bug here, never a property of the input.
var errLayout = errors.New("ztocfb: unexpected flatbuffer layout")

// patch turns buf, built with a stand-in vector of stand bytes that begins
// at vec, into the head and tail of the zTOC with n bytes there: the
// vector's length, and the root's references into the tail, which grow by
// n-stand.
func patch(buf []byte, root, info, vec int, stand, n int64) error {
	tail := vec + int(stand)
	le := binary.LittleEndian
	// field returns where a table's field is, or -1 if it is absent.
	field := func(table, slot int) int {
		t := flatbuffers.Table{Bytes: buf, Pos: flatbuffers.UOffsetT(table)}
		// The vtable too must be in the head, or the stand-in would be
		// between the table and it.
		if vt := table - int(int32(le.Uint32(buf[table:]))); vt >= vec {
			return -2
		}
		o := t.Offset(flatbuffers.VOffsetT(4 + 2*slot))
		if o == 0 {
			return -1
		}
		return table + int(o)
	}
	if f := field(info, slotCheckpoints); f < 0 || f+int(le.Uint32(buf[f:])) != vec-flatbuffers.SizeUOffsetT {
		return errLayout
	}
	le.PutUint32(buf[vec-flatbuffers.SizeUOffsetT:], uint32(n))
	for _, slot := range []int{slotVersion, slotBuildToolIdentifier, slotToc} {
		f := field(root, slot)
		if f < 0 || f >= vec {
			return errLayout
		}
		to := f + int(le.Uint32(buf[f:]))
		if to < tail {
			return errLayout
		}
		le.PutUint32(buf[f:], uint32(int64(to-f)+n-stand))
	}
	return nil
}

// fileList adds the TOC table, files last to first as soci does.
func fileList(b *flatbuffers.Builder, files []ztoc.FileMetadata) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(files))
	for i := len(files) - 1; i >= 0; i-- {
		offs[i] = file(b, &files[i])
	}
	fbs.TOCStartMetadataVector(b, len(offs))
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	list := b.EndVector(len(offs))
	fbs.TOCStart(b)
	fbs.TOCAddMetadata(b, list)
	return fbs.TOCEnd(b)
}

// file adds one FileMetadata table: its strings, then its PAX records
// sorted by key, then the table, fields in schema order.
func file(b *flatbuffers.Builder, f *ztoc.FileMetadata) flatbuffers.UOffsetT {
	name := b.CreateString(f.Name)
	typ := b.CreateString(f.Type)
	link := b.CreateString(f.Linkname)
	uname := b.CreateString(f.Uname)
	gname := b.CreateString(f.Gname)
	// A time MarshalText refuses (a year past 9999) is an empty string in
	// soci's zTOCs too.
	mt, _ := f.ModTime.MarshalText()
	mtime := b.CreateByteString(mt)

	keys := make([]string, 0, len(f.PAXHeaders))
	for k := range f.PAXHeaders {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	recs := make([]flatbuffers.UOffsetT, len(keys))
	for i, k := range keys {
		key := b.CreateString(k)
		val := b.CreateString(f.PAXHeaders[k])
		fbs.XattrStart(b)
		fbs.XattrAddKey(b, key)
		fbs.XattrAddValue(b, val)
		recs[i] = fbs.XattrEnd(b)
	}
	fbs.FileMetadataStartXattrsVector(b, len(recs))
	for i := len(recs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(recs[i])
	}
	xattrs := b.EndVector(len(recs))

	fbs.FileMetadataStart(b)
	fbs.FileMetadataAddName(b, name)
	fbs.FileMetadataAddType(b, typ)
	fbs.FileMetadataAddUncompressedOffset(b, int64(f.UncompressedOffset))
	fbs.FileMetadataAddUncompressedSize(b, int64(f.UncompressedSize))
	fbs.FileMetadataAddLinkname(b, link)
	fbs.FileMetadataAddMode(b, f.Mode)
	fbs.FileMetadataAddUid(b, uint32(f.UID))
	fbs.FileMetadataAddGid(b, uint32(f.GID))
	fbs.FileMetadataAddUname(b, uname)
	fbs.FileMetadataAddGname(b, gname)
	fbs.FileMetadataAddModTime(b, mtime)
	fbs.FileMetadataAddDevmajor(b, f.Devmajor)
	fbs.FileMetadataAddDevminor(b, f.Devminor)
	fbs.FileMetadataAddXattrs(b, xattrs)
	return fbs.FileMetadataEnd(b)
}

// algorithm is the schema's enum value for a compression name, which
// soci spells in lower case and the schema capitalized.
func algorithm(name string) (fbs.CompressionAlgorithm, error) {
	for k, v := range fbs.EnumValuesCompressionAlgorithm {
		if strings.ToLower(k) == name {
			return v, nil
		}
	}
	return 0, fmt.Errorf("zTOC: compression algorithm %q not in the schema", name)
}

// estimate is about the size of the flatbuffer without checkpoints, so that
// the builder rarely grows (each growth copies everything built so far).
func estimate(z *ztoc.Ztoc) int {
	n := 1024 + len(z.Version) + len(z.BuildToolIdentifier) + 80*len(z.SpanDigests)
	for i := range z.FileMetadata {
		f := &z.FileMetadata[i]
		// Six strings of 4 to 7 bytes of overhead, 35 for the time, the
		// table, its vtable and its place in the list.
		n += 200 + len(f.Name) + len(f.Type) + len(f.Linkname) + len(f.Uname) + len(f.Gname)
		for k, v := range f.PAXHeaders {
			n += 40 + len(k) + len(v)
		}
	}
	return n
}
