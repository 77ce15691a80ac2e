#include "gzindex.h"

#include <stdlib.h>
#include <string.h>

static void put_le(unsigned char *p, uint64_t v, int n) {
	for (int i = 0; i < n; i++) {
		p[i] = (unsigned char)(v >> (8 * i));
	}
}

hermes_gz *hermes_gz_new(int64_t span) {
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

// record writes a checkpoint for the current position to r. The window is
// circular: the oldest bytes are those after the write position.
static void record(hermes_gz *g, unsigned char *r) {
	unsigned left = g->strm.avail_out;
	put_le(r, (uint64_t)g->totin, 8);
	put_le(r + 8, (uint64_t)g->totout, 8);
	r[16] = (unsigned char)(g->strm.data_type & 7);
	unsigned char *w = r + 17;
	memcpy(w, g->window + HERMES_GZ_WINDOW - left, left);
	memcpy(w + left, g->window, HERMES_GZ_WINDOW - left);
	g->count++;
}

int hermes_gz_step(hermes_gz *g, unsigned char *cp, size_t room, size_t *used) {
	z_stream *s = &g->strm;
	g->out_len = 0;
	*used = 0;
	while (s->avail_in != 0) {
		// Pausing between two inflate() calls changes nothing in what they
		// do, so the caller can take the output or give more room here.
		if (g->out_len + HERMES_GZ_WINDOW > HERMES_GZ_OUT) {
			return HERMES_GZ_OUTPUT;
		}
		if (*used + HERMES_GZ_RECORD > room) {
			return HERMES_GZ_CP_FULL;
		}
		if (s->avail_out == 0) {
			s->next_out = g->window;
			s->avail_out = HERMES_GZ_WINDOW;
		}
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
		if ((s->data_type & 128) && !(s->data_type & 64) && (g->totout == 0 || g->totout - g->last > g->span)) {
			record(g, cp + *used);
			*used += HERMES_GZ_RECORD;
			g->last = g->totout;
		}
	}
	return HERMES_GZ_NEED_INPUT;
}

void hermes_gz_header(hermes_gz *g, unsigned char *header) {
	put_le(header, (uint32_t)g->count, 4);
	put_le(header + 4, (uint64_t)g->span, 8);
}
