package prefetch

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/registry/profile"
)

// Span is one zTOC span of a layer: [CompressedStart, CompressedEnd) of
// the blob inflates to [UncompressedStart, UncompressedEnd) of the tar.
type Span struct {
	CompressedStart, CompressedEnd     int64
	UncompressedStart, UncompressedEnd int64
}

// Layer is a layer's span table, span i at index i, in ascending offsets.
type Layer struct {
	Digest digest.Digest
	Spans  []Span
}

// Options tune a plan. Zero values take the defaults.
type Options struct {
	// Gap merges two spans into one request when at most Gap compressed
	// bytes lie between them: fetching a little unneeded data costs less
	// than a round trip (default 256 KiB; negative: only adjacent spans).
	Gap int64
	// MaxRequest splits a merged request at a span boundary once it would
	// exceed this many bytes, so requests run in parallel (default 8 MiB; a
	// single span larger than it is one request).
	MaxRequest int64
	// MaxBytes bounds the bytes a plan fetches, so one start cannot take
	// the node's link: spans used later (then less counted) are left to
	// on-demand fetching (default 256 MiB; negative: no bound).
	MaxBytes int64
	// MinCount leaves out entries fewer runs read (default 1: all).
	MinCount int64
}

// Defaults.
const (
	DefaultGap        = 256 << 10
	DefaultMaxRequest = 8 << 20
	DefaultMaxBytes   = 256 << 20
)

func (o Options) withDefaults() Options {
	switch {
	case o.Gap == 0:
		o.Gap = DefaultGap
	case o.Gap < 0:
		o.Gap = 0
	}
	if o.MaxRequest <= 0 {
		o.MaxRequest = DefaultMaxRequest
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MinCount <= 0 {
		o.MinCount = 1
	}
	return o
}

// Request is one range request of a layer blob.
type Request struct {
	Layer digest.Digest
	// Offset and Length are compressed bytes of the blob.
	Offset, Length int64
	// Spans are the span ids the request holds, ascending (the gap bytes
	// between merged spans belong to spans not listed).
	Spans []uint32
	// First is the earliest first use among Spans (see profile.Span).
	First uint32
}

// Plan returns the range requests that fetch what p names of layers,
// ordered by first use (then layer digest and offset), within opts'
// byte bound. A span or range of a layer not in layers, or past its span
// table, is an error: the profile was validated against another index.
func Plan(p profile.Profile, layers []Layer, opts Options) ([]Request, error) {
	opts = opts.withDefaults()
	tables := make(map[digest.Digest][]Span, len(layers))
	for _, l := range layers {
		tables[l.Digest] = l.Spans
	}
	type want struct {
		layer digest.Digest
		id    uint32
		first uint32
		count int64
	}
	var wants []want
	for _, l := range p.Layers {
		table, ok := tables[l.Digest]
		if !ok {
			return nil, fmt.Errorf("profile names layer %s, which has no span table", l.Digest)
		}
		picked := map[uint32]want{}
		add := func(id uint32, first uint32, count int64) {
			if w, ok := picked[id]; ok {
				first, count = min(first, w.first), max(count, w.count)
			}
			picked[id] = want{layer: l.Digest, id: id, first: first, count: count}
		}
		for _, s := range l.Spans {
			if int64(s.ID) >= int64(len(table)) {
				return nil, fmt.Errorf("layer %s: span %d of %d", l.Digest, s.ID, len(table))
			}
			if s.Count >= opts.MinCount {
				add(s.ID, s.First, s.Count)
			}
		}
		for _, r := range l.Ranges {
			if r.Count < opts.MinCount {
				continue
			}
			ids, err := spansOf(table, r.Offset, r.End())
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			for _, id := range ids {
				// Pages carry no first use: after every span that does.
				add(id, ^uint32(0), r.Count)
			}
		}
		for _, w := range picked {
			wants = append(wants, w)
		}
	}
	// Budget: earliest used first, then most counted, then position.
	slices.SortFunc(wants, func(a, b want) int {
		if c := cmp.Compare(a.first, b.first); c != 0 {
			return c
		}
		if c := cmp.Compare(b.count, a.count); c != 0 {
			return c
		}
		if c := cmp.Compare(a.layer, b.layer); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	var budget int64
	kept := map[digest.Digest][]want{}
	for _, w := range wants {
		s := tables[w.layer][w.id]
		n := s.CompressedEnd - s.CompressedStart
		if opts.MaxBytes > 0 && budget+n > opts.MaxBytes {
			continue // a smaller later span may still fit
		}
		budget += n
		kept[w.layer] = append(kept[w.layer], w)
	}
	var out []Request
	for d, ws := range kept {
		table := tables[d]
		slices.SortFunc(ws, func(a, b want) int { return cmp.Compare(a.id, b.id) })
		var cur *Request
		for _, w := range ws {
			s := table[w.id]
			if cur != nil && s.CompressedStart-(cur.Offset+cur.Length) <= opts.Gap &&
				s.CompressedEnd-cur.Offset <= opts.MaxRequest {
				cur.Length = s.CompressedEnd - cur.Offset
				cur.Spans = append(cur.Spans, w.id)
				cur.First = min(cur.First, w.first)
				continue
			}
			out = append(out, Request{Layer: d, Offset: s.CompressedStart, Length: s.CompressedEnd - s.CompressedStart,
				Spans: []uint32{w.id}, First: w.first})
			cur = &out[len(out)-1]
		}
	}
	slices.SortFunc(out, func(a, b Request) int {
		if c := cmp.Compare(a.First, b.First); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Layer, b.Layer); c != 0 {
			return c
		}
		return cmp.Compare(a.Offset, b.Offset)
	})
	return out, nil
}

// spansOf returns the ids of the spans holding uncompressed [start, end).
func spansOf(table []Span, start, end int64) ([]uint32, error) {
	if len(table) == 0 {
		return nil, fmt.Errorf("range [%d,%d) of a layer with no spans", start, end)
	}
	last := table[len(table)-1].UncompressedEnd
	// A range may end on the partial last page past the layer's end.
	end = min(end, last)
	if start >= last {
		return nil, fmt.Errorf("range at %d past the layer's %d bytes", start, last)
	}
	i, _ := slices.BinarySearchFunc(table, start, func(s Span, off int64) int {
		if s.UncompressedEnd <= off {
			return -1
		}
		if s.UncompressedStart > off {
			return 1
		}
		return 0
	})
	var ids []uint32
	for ; i < len(table) && table[i].UncompressedStart < end; i++ {
		ids = append(ids, uint32(i))
	}
	return ids, nil
}
