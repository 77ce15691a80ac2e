// One-pass gzip indexing for zTOCs: inflates a gzip stream chunk by chunk,
// hands the uncompressed bytes to the caller, and records a checkpoint (the
// compressed and uncompressed offsets, the pending bit count and the last
// 32 KiB of output) at deflate block boundaries at least a span apart.
//
// The checkpoints are serialized, into memory the caller owns, in
// soci-snapshotter's zinfo v2 layout so that zTOCs match soci's byte for
// byte:
//
//	int32  LE  number of checkpoints
//	int64  LE  span size
//	then per checkpoint:
//	int64  LE  compressed offset of the first full byte after the boundary
//	int64  LE  uncompressed offset of the boundary
//	uint8      bits of the byte before that still belong to the next block
//	32 KiB     the uncompressed window preceding the boundary
#ifndef HERMES_GZINDEX_H
#define HERMES_GZINDEX_H

#include <stdint.h>
#include <stddef.h>
#include <zlib.h>

#define HERMES_GZ_WINDOW 32768
// Input is consumed in chunks of this size, as soci's builder reads its
// file: chunking decides where inflate() returns, so it is kept equal.
#define HERMES_GZ_CHUNK 16384
// Output is handed over once it may not fit another window.
#define HERMES_GZ_OUT (512 * 1024)
// With file alignment, inflate writes into a ring this big, so the window
// of a block boundary passed up to HERMES_GZ_OUT ago can still be read.
#define HERMES_GZ_RING (1024 * 1024)
// Block boundaries remembered for file alignment.
#define HERMES_GZ_MARKS 512
// With file alignment, output is handed over in smaller pieces, so that
// inflate runs little ahead of the tar reader and rarely takes a span
// checkpoint past a file start the reader has yet to see.
#define HERMES_GZ_OUT_ALIGN (96 * 1024)
#define HERMES_GZ_RECORD (8 + 8 + 1 + HERMES_GZ_WINDOW)
#define HERMES_GZ_HEADER (4 + 8)

enum {
	HERMES_GZ_NEED_INPUT = 1, // the chunk is used up: provide the next one
	HERMES_GZ_OUTPUT = 2,     // out holds output to take before stepping on
	HERMES_GZ_MEMBER_END = 3, // a gzip member ended with the chunk: more input starts a new member
	HERMES_GZ_CP_FULL = 4,    // no room for another checkpoint record: step again with more
};

// A block boundary a checkpoint may still be placed at.
typedef struct {
	int64_t in, out;
	unsigned char bits;
} hermes_gz_mark;

typedef struct {
	z_stream strm;
	int64_t totin, totout, last, span;
	// ring_size is HERMES_GZ_WINDOW, or HERMES_GZ_RING with alignment;
	// window[totout % ring_size] is where output goes next.
	size_t ring_size;
	unsigned char window[HERMES_GZ_RING];
	unsigned char in[HERMES_GZ_CHUNK];
	unsigned char out[HERMES_GZ_OUT];
	size_t out_len;
	int32_t count; // checkpoints recorded so far
	// With alignment: the last boundaries passed (a ring, marks_n of them
	// before mark_next).
	int align;
	hermes_gz_mark marks[HERMES_GZ_MARKS];
	int marks_next, marks_n;
	int64_t end_at; // with alignment: checkpoint the first boundary at or after this; -1: none
} hermes_gz;

// hermes_gz_new starts an index with a checkpoint every span bytes. With
// align set, boundaries are remembered so that hermes_gz_align can place a
// checkpoint at one already passed.
hermes_gz *hermes_gz_new(int64_t span, int align);
void hermes_gz_free(hermes_gz *g);
// hermes_gz_input makes the first n bytes of g->in the next chunk.
void hermes_gz_input(hermes_gz *g, unsigned n);
// hermes_gz_next_member starts the next gzip member of a multi-member stream.
int hermes_gz_next_member(hermes_gz *g);
// hermes_gz_step inflates until the chunk is used up, a member ends, the
// output buffer is full, or cp (room bytes, owned by the caller and not kept)
// has no room for another checkpoint record; it returns one of the enum
// values above or a negative zlib error. Records are written to cp and
// *used is set to the bytes written; g->out_len is reset at every call.
int hermes_gz_step(hermes_gz *g, unsigned char *cp, size_t room, size_t *used);
// hermes_gz_align places up to two checkpoints, in order, each only after
// the last checkpoint, outside the last block and while its window is in
// the ring: with start >= 0 at the last block boundary at or before start
// (where a file's data begins), and with end >= 0 at the first boundary at
// or after end (where a file's data ends), at once if inflate has passed
// it, else when it does. It writes the records to cp (room bytes, at least
// two records) and returns how many.
int hermes_gz_align(hermes_gz *g, int64_t start, int64_t end, unsigned char *cp, size_t room);
// hermes_gz_safe returns the compressed offset before which no later
// checkpoint's span can start: spans before it can be hashed.
int64_t hermes_gz_safe(hermes_gz *g);
// hermes_gz_header writes the header of the serialized checkpoints.
void hermes_gz_header(hermes_gz *g, unsigned char *header);

#endif
