#include "gzindex.h"

#include <stdlib.h>
#include <string.h>

static void put_le(unsigned char *p, uint64_t v, int n) {
	for (int i = 0; i < n; i++) {
		p[i] = (unsigned char)(v >> (8 * i));
	}
}

hermes_gz *hermes_gz_new(int64_t span, int align) {
	hermes_gz *g = calloc(1, sizeof(*g));
	if (g == NULL) {
		return NULL;
	}
	// 15 window bits plus 32: accept a gzip or zlib header, as soci does.
	if (inflateInit2(&g->strm, 15 + 32) != Z_OK) {
		free(g);
		return NULL;
	}
	g->span = span;
	g->align = align;
	// Without alignment inflate fills the 32 KiB window exactly as soci's
	// builder does: where inflate() returns, and so which boundaries it
	// reports, depends on it, and zTOCs must match soci's byte for byte.
	g->ring_size = align ? HERMES_GZ_RING : HERMES_GZ_WINDOW;
	g->end_at = -1;
	return g;
}

void hermes_gz_free(hermes_gz *g) {
	if (g == NULL) {
		return;
	}
	inflateEnd(&g->strm);
	free(g);
}

void hermes_gz_input(hermes_gz *g, unsigned n) {
	g->strm.next_in = g->in;
	g->strm.avail_in = n;
}

int hermes_gz_next_member(hermes_gz *g) {
	return inflateReset2(&g->strm, 15 + 32);
}

// record writes a checkpoint at a boundary to r: its offsets, bits and the
// 32 KiB of output before it, read from the ring.
static void record(hermes_gz *g, unsigned char *r, int64_t in, int64_t out, unsigned char bits) {
	put_le(r, (uint64_t)in, 8);
	put_le(r + 8, (uint64_t)out, 8);
	r[16] = bits;
	unsigned char *w = r + 17;
	size_t ring = g->ring_size;
	size_t from = (size_t)((out - HERMES_GZ_WINDOW) % (int64_t)ring + (int64_t)ring) % ring;
	size_t first = ring - from < HERMES_GZ_WINDOW ? ring - from : HERMES_GZ_WINDOW;
	memcpy(w, g->window + from, first);
	memcpy(w + first, g->window, HERMES_GZ_WINDOW - first);
	g->count++;
	g->last = out;
}

int hermes_gz_step(hermes_gz *g, unsigned char *cp, size_t room, size_t *used) {
	z_stream *s = &g->strm;
	g->out_len = 0;
	*used = 0;
	size_t out_max = g->align ? HERMES_GZ_OUT_ALIGN : HERMES_GZ_OUT;
	while (s->avail_in != 0) {
		// Pausing between two inflate() calls changes nothing in what they
		// do, so the caller can take the output or give more room here.
		if (g->out_len + HERMES_GZ_WINDOW > out_max) {
			return HERMES_GZ_OUTPUT;
		}
		if (*used + HERMES_GZ_RECORD > room) {
			return HERMES_GZ_CP_FULL;
		}
		// Output goes to the ring at totout, at most a window per call so
		// that it fits in out. With a 32 KiB ring this is soci's loop: the
		// rest of the window, then the whole window again.
		size_t pos = (size_t)(g->totout % (int64_t)g->ring_size);
		size_t avail = g->ring_size - pos;
		s->next_out = g->window + pos;
		s->avail_out = (unsigned)(avail < HERMES_GZ_WINDOW ? avail : HERMES_GZ_WINDOW);
		unsigned char *from = s->next_out;
		g->totin += s->avail_in;
		g->totout += s->avail_out;
		// Z_BLOCK: return at every deflate block boundary, where a
		// checkpoint may go.
		int ret = inflate(s, Z_BLOCK);
		g->totin -= s->avail_in;
		g->totout -= s->avail_out;
		size_t n = (size_t)(s->next_out - from);
		memcpy(g->out + g->out_len, from, n);
		g->out_len += n;
		if (ret == Z_NEED_DICT) {
			ret = Z_DATA_ERROR;
		}
		if (ret == Z_MEM_ERROR || ret == Z_DATA_ERROR || ret == Z_STREAM_ERROR) {
			return ret;
		}
		if (ret == Z_STREAM_END) {
			if (s->avail_in == 0) {
				return HERMES_GZ_MEMBER_END;
			}
			// Another member follows in this chunk.
			if ((ret = inflateReset2(s, 15 + 32)) != Z_OK) {
				return ret;
			}
			continue;
		}
		// data_type: bit 7 = at a block boundary, bit 6 = in the last block,
		// bits 0-2 = unused bits of the last byte read. A checkpoint goes at
		// the first boundary (after the header) and then at the first
		// boundary more than a span after the previous one, never after
		// the last block.
		if ((s->data_type & 128) && !(s->data_type & 64)) {
			int at_end = g->end_at >= 0 && g->totout >= g->end_at && g->totout > g->last;
			if (g->totout == 0 || g->totout - g->last > g->span || at_end) {
				record(g, cp + *used, g->totin, g->totout, (unsigned char)(s->data_type & 7));
				*used += HERMES_GZ_RECORD;
				g->end_at = -1;
			} else if (g->align) {
				hermes_gz_mark *m = &g->marks[g->marks_next];
				m->in = g->totin;
				m->out = g->totout;
				m->bits = (unsigned char)(s->data_type & 7);
				g->marks_next = (g->marks_next + 1) % HERMES_GZ_MARKS;
				if (g->marks_n < HERMES_GZ_MARKS) {
					g->marks_n++;
				}
			}
		}
	}
	return HERMES_GZ_NEED_INPUT;
}

// usable reports whether a checkpoint can still go at mark m: after the
// last one and with its window in the ring.
static int usable(hermes_gz *g, const hermes_gz_mark *m) {
	return m->out > g->last && g->totout - m->out + HERMES_GZ_WINDOW <= (int64_t)g->ring_size;
}

static hermes_gz_mark *mark(hermes_gz *g, int age) {
	return &g->marks[(g->marks_next - age + HERMES_GZ_MARKS) % HERMES_GZ_MARKS];
}

int hermes_gz_align(hermes_gz *g, int64_t start, int64_t end, unsigned char *cp, size_t room) {
	int n = 0;
	if (room < 2 * HERMES_GZ_RECORD) {
		return 0;
	}
	if (start >= 0) {
		// Newest first: the last boundary at or before start.
		for (int i = 1; i <= g->marks_n; i++) {
			hermes_gz_mark *m = mark(g, i);
			if (m->out > start) {
				continue;
			}
			if (usable(g, m)) {
				record(g, cp, m->in, m->out, m->bits);
				n++;
			}
			break;
		}
	}
	if (end >= 0) {
		if (g->last >= end) {
			return n; // a checkpoint at or after end exists
		}
		// Oldest first: the first boundary at or after end.
		for (int i = g->marks_n; i >= 1; i--) {
			hermes_gz_mark *m = mark(g, i);
			if (m->out < end) {
				continue;
			}
			if (usable(g, m)) {
				record(g, cp + n * HERMES_GZ_RECORD, m->in, m->out, m->bits);
				n++;
			}
			return n;
		}
		g->end_at = end; // not reached yet
	}
	return n;
}

int64_t hermes_gz_safe(hermes_gz *g) {
	int64_t safe = g->totin - 1; // a checkpoint found next may take the byte before
	for (int i = g->marks_n; i >= 1; i--) {
		hermes_gz_mark *m = mark(g, i);
		if (usable(g, m)) {
			if (m->in - 1 < safe) {
				safe = m->in - 1;
			}
			break; // the oldest usable mark starts earliest
		}
	}
	return safe;
}

void hermes_gz_header(hermes_gz *g, unsigned char *header) {
	put_le(header, (uint32_t)g->count, 4);
	put_le(header + 4, (uint64_t)g->span, 8);
}
