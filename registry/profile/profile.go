package profile

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/registry/artifacts"
)

const (
	// ArtifactType is the artifactType of a profile manifest, whose subject
	// is the image manifest and whose one layer is the profile (MediaType).
	ArtifactType = artifacts.ProfileType
	// MediaType is the media type of the profile blob itself.
	MediaType = artifacts.ProfileMediaType
	// Version is the format version this package writes and reads.
	Version = 1
	// PageSize is the granularity of ranges: the kernel's page, which is
	// what a read or a fault of a mapped file touches.
	PageSize = 4096
)

// ErrInvalid is wrapped by every error about a profile's content.
var ErrInvalid = errors.New("invalid profile")

// Limits bound a profile. Zero fields take the defaults.
type Limits struct {
	// MaxBytes bounds the encoded profile (default 1 MiB).
	MaxBytes int
	// MaxEntries bounds the spans plus ranges of all layers (default 65536).
	MaxEntries int
}

// Default limits.
const (
	DefaultMaxBytes   = 1 << 20
	DefaultMaxEntries = 1 << 16
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return l
}

// Profile is what the workloads of one image manifest read.
type Profile struct {
	Version int `json:"version"`
	// Manifest is the image manifest profiled (the artifact's subject).
	Manifest digest.Digest `json:"manifest"`
	// Runs is how many recordings were merged into this profile.
	Runs int64 `json:"runs"`
	// Layers, in ascending digest order, one entry per layer read.
	Layers []Layer `json:"layers"`
}

// Layer is what was read of one layer.
type Layer struct {
	// Digest is the layer's (compressed) digest, as in the image manifest.
	Digest digest.Digest `json:"digest"`
	// Spans read, in ascending ID order.
	Spans []Span `json:"spans,omitempty"`
	// Ranges of the uncompressed layer read, page granular, in ascending
	// offset order, not overlapping.
	Ranges []Range `json:"ranges,omitempty"`
}

// Span is one zTOC span read.
type Span struct {
	ID uint32 `json:"id"`
	// Count is how many runs read it (≥ 1).
	Count int64 `json:"count"`
	// First orders first use across the whole profile: lower was read
	// earlier. Merging keeps the earliest.
	First uint32 `json:"first"`
}

// Range is one run of pages of the uncompressed layer read.
type Range struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	Count  int64 `json:"count"`
}

// End is the offset just past r.
func (r Range) End() int64 { return r.Offset + r.Length }

// Parse decodes a profile, refusing more than lim.MaxBytes bytes before
// decoding, unknown fields, and a profile whose shape is wrong (see Check).
func Parse(r io.Reader, lim Limits) (Profile, error) {
	lim = lim.withDefaults()
	body, err := io.ReadAll(io.LimitReader(r, int64(lim.MaxBytes)+1))
	if err != nil {
		return Profile{}, fmt.Errorf("reading profile: %w", err)
	}
	if len(body) > lim.MaxBytes {
		return Profile{}, fmt.Errorf("%w: more than %d bytes", ErrInvalid, lim.MaxBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return Profile{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return Profile{}, fmt.Errorf("%w: trailing data after the profile", ErrInvalid)
	}
	if err := Check(p, lim); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// Marshal encodes p canonically (equal profiles give equal bytes).
func Marshal(p Profile) ([]byte, error) {
	return json.Marshal(p)
}

// Check verifies what can be verified without the image: version, digests,
// order, page granularity, counts and the bounds of lim.
func Check(p Profile, lim Limits) error {
	lim = lim.withDefaults()
	if p.Version != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalid, p.Version, Version)
	}
	if err := p.Manifest.Validate(); err != nil {
		return fmt.Errorf("%w: manifest digest %q: %v", ErrInvalid, p.Manifest, err)
	}
	if p.Runs < 1 {
		return fmt.Errorf("%w: %d runs", ErrInvalid, p.Runs)
	}
	entries := 0
	for i, l := range p.Layers {
		if err := l.Digest.Validate(); err != nil {
			return fmt.Errorf("%w: layer %d: digest %q: %v", ErrInvalid, i, l.Digest, err)
		}
		if i > 0 && p.Layers[i-1].Digest >= l.Digest {
			return fmt.Errorf("%w: layers not in ascending digest order at %s (or listed twice)", ErrInvalid, l.Digest)
		}
		if len(l.Spans) == 0 && len(l.Ranges) == 0 {
			return fmt.Errorf("%w: layer %s: nothing read", ErrInvalid, l.Digest)
		}
		for j, s := range l.Spans {
			if j > 0 && l.Spans[j-1].ID >= s.ID {
				return fmt.Errorf("%w: layer %s: spans not in ascending order at span %d (or listed twice)", ErrInvalid, l.Digest, s.ID)
			}
			if s.Count < 1 {
				return fmt.Errorf("%w: layer %s: span %d: count %d", ErrInvalid, l.Digest, s.ID, s.Count)
			}
		}
		for j, r := range l.Ranges {
			if r.Offset < 0 || r.Length <= 0 || r.Offset%PageSize != 0 || r.Length%PageSize != 0 || r.End() < r.Offset {
				return fmt.Errorf("%w: layer %s: range [%d,+%d) is not a run of whole %d-byte pages", ErrInvalid, l.Digest, r.Offset, r.Length, PageSize)
			}
			if j > 0 && l.Ranges[j-1].End() > r.Offset {
				return fmt.Errorf("%w: layer %s: ranges overlap or are out of order at offset %d", ErrInvalid, l.Digest, r.Offset)
			}
			if r.Count < 1 {
				return fmt.Errorf("%w: layer %s: range at %d: count %d", ErrInvalid, l.Digest, r.Offset, r.Count)
			}
		}
		entries += len(l.Spans) + len(l.Ranges)
	}
	if entries > lim.MaxEntries {
		return fmt.Errorf("%w: %d entries, at most %d", ErrInvalid, entries, lim.MaxEntries)
	}
	return nil
}

// IndexedLayer is what Validate needs of one indexed layer of the image:
// from the SOCI index (which layers it indexes) and the layer's zTOC.
type IndexedLayer struct {
	Digest digest.Digest
	// Spans is the zTOC's span count (MaxSpanID + 1).
	Spans int
	// UncompressedSize is the zTOC's UncompressedArchiveSize.
	UncompressedSize int64
}

// Validate checks p against the image it claims to profile: manifest is the
// image manifest digest, layers its indexed layers. A profile naming another
// manifest, a layer that is not one of layers (another image's, or one left
// unindexed), a span past a layer's last or a range past its end is refused,
// as is anything Check refuses.
func Validate(p Profile, manifest digest.Digest, layers []IndexedLayer, lim Limits) error {
	if err := Check(p, lim); err != nil {
		return err
	}
	if p.Manifest != manifest {
		return fmt.Errorf("%w: profile of manifest %s, not of %s", ErrInvalid, p.Manifest, manifest)
	}
	byDigest := make(map[digest.Digest]IndexedLayer, len(layers))
	for _, l := range layers {
		byDigest[l.Digest] = l
	}
	for _, l := range p.Layers {
		il, ok := byDigest[l.Digest]
		if !ok {
			return fmt.Errorf("%w: layer %s is not an indexed layer of %s", ErrInvalid, l.Digest, manifest)
		}
		if n := len(l.Spans); n > 0 && int64(l.Spans[n-1].ID) >= int64(il.Spans) {
			return fmt.Errorf("%w: layer %s: span %d, the layer's zTOC has %d spans", ErrInvalid, l.Digest, l.Spans[n-1].ID, il.Spans)
		}
		limit := roundUp(il.UncompressedSize)
		if n := len(l.Ranges); n > 0 && l.Ranges[n-1].End() > limit {
			return fmt.Errorf("%w: layer %s: range ends at %d, past the layer's %d bytes", ErrInvalid, l.Digest, l.Ranges[n-1].End(), il.UncompressedSize)
		}
	}
	return nil
}

func roundUp(n int64) int64 { return (n + PageSize - 1) / PageSize * PageSize }

// Merge unites profiles of one manifest: runs add up, a span's counts add
// up and it keeps its earliest first use, overlapping ranges are split at
// every boundary and each piece counts the runs that read it. Beyond lim
// the least-counted entries are dropped (the ranking is bound's). Each
// input must pass Check; the result
// does too. The result depends only on the inputs' content, not on their
// order.
func Merge(lim Limits, ps ...Profile) (Profile, error) {
	lim = lim.withDefaults()
	if len(ps) == 0 {
		return Profile{}, fmt.Errorf("%w: nothing to merge", ErrInvalid)
	}
	out := Profile{Version: Version, Manifest: ps[0].Manifest}
	spans := map[digest.Digest]map[uint32]Span{}
	ranges := map[digest.Digest][]Range{}
	for _, p := range ps {
		if err := Check(p, Limits{MaxBytes: lim.MaxBytes, MaxEntries: int(^uint(0) >> 1)}); err != nil {
			return Profile{}, err
		}
		if p.Manifest != out.Manifest {
			return Profile{}, fmt.Errorf("%w: merging profiles of %s and %s", ErrInvalid, out.Manifest, p.Manifest)
		}
		out.Runs += p.Runs
		for _, l := range p.Layers {
			m := spans[l.Digest]
			if m == nil {
				m = map[uint32]Span{}
				spans[l.Digest] = m
			}
			for _, s := range l.Spans {
				if have, ok := m[s.ID]; ok {
					s.Count += have.Count
					s.First = min(s.First, have.First)
				}
				m[s.ID] = s
			}
			ranges[l.Digest] = append(ranges[l.Digest], l.Ranges...)
		}
	}
	digests := make([]digest.Digest, 0, len(spans))
	for d := range spans {
		digests = append(digests, d)
	}
	slices.Sort(digests)
	for _, d := range digests {
		l := Layer{Digest: d, Ranges: unite(ranges[d])}
		for _, s := range spans[d] {
			l.Spans = append(l.Spans, s)
		}
		slices.SortFunc(l.Spans, func(a, b Span) int { return cmp.Compare(a.ID, b.ID) })
		out.Layers = append(out.Layers, l)
	}
	return bound(out, lim)
}

// unite splits overlapping ranges at every boundary, sums the counts of
// each piece and joins adjacent pieces of equal count.
func unite(rs []Range) []Range {
	if len(rs) == 0 {
		return nil
	}
	type edge struct {
		at    int64
		delta int64
	}
	edges := make([]edge, 0, 2*len(rs))
	for _, r := range rs {
		edges = append(edges, edge{r.Offset, r.Count}, edge{r.End(), -r.Count})
	}
	slices.SortFunc(edges, func(a, b edge) int { return cmp.Compare(a.at, b.at) })
	var out []Range
	var count int64
	for i := 0; i < len(edges); {
		at := edges[i].at
		for ; i < len(edges) && edges[i].at == at; i++ {
			count += edges[i].delta
		}
		if i == len(edges) {
			break
		}
		next := edges[i].at
		if count <= 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].End() == at && out[n-1].Count == count {
			out[n-1].Length += next - at
			continue
		}
		out = append(out, Range{Offset: at, Length: next - at, Count: count})
	}
	return out
}

// entry is a span or range, for ranking when bounding.
type entry struct {
	layer  int
	isSpan bool
	idx    int
	count  int64
	first  uint32
	key    int64
}

// bound drops the least-counted entries until p fits lim. Ranking: lower
// count first, then (spans) later first use, then ranges before spans,
// then higher layer digest, then higher id or offset: a total order, so
// the result is deterministic.
func bound(p Profile, lim Limits) (Profile, error) {
	var all []entry
	for li, l := range p.Layers {
		for i, s := range l.Spans {
			all = append(all, entry{layer: li, isSpan: true, idx: i, count: s.Count, first: s.First, key: int64(s.ID)})
		}
		for i, r := range l.Ranges {
			all = append(all, entry{layer: li, idx: i, count: r.Count, first: ^uint32(0), key: r.Offset})
		}
	}
	slices.SortFunc(all, func(a, b entry) int {
		if c := cmp.Compare(a.count, b.count); c != 0 {
			return c
		}
		if c := cmp.Compare(b.first, a.first); c != 0 {
			return c
		}
		if a.isSpan != b.isSpan {
			if !a.isSpan {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.layer, a.layer); c != 0 {
			return c
		}
		return cmp.Compare(b.key, a.key)
	})
	drop := max(0, len(all)-lim.MaxEntries)
	for {
		q := without(p, all[:drop])
		b, err := Marshal(q)
		if err != nil {
			return Profile{}, err
		}
		if len(b) <= lim.MaxBytes {
			return q, nil
		}
		if drop == len(all) {
			return Profile{}, fmt.Errorf("%w: an empty profile is %d bytes, over the %d-byte bound", ErrInvalid, len(b), lim.MaxBytes)
		}
		// Drop about the share of entries the excess is, at least one.
		drop += max(1, (len(all)-drop)*(len(b)-lim.MaxBytes)/len(b))
		drop = min(drop, len(all))
	}
}

func without(p Profile, drop []entry) Profile {
	gone := map[[3]int]bool{}
	for _, e := range drop {
		k := 0
		if e.isSpan {
			k = 1
		}
		gone[[3]int{e.layer, k, e.idx}] = true
	}
	q := Profile{Version: p.Version, Manifest: p.Manifest, Runs: p.Runs}
	for li, l := range p.Layers {
		nl := Layer{Digest: l.Digest}
		for i, s := range l.Spans {
			if !gone[[3]int{li, 1, i}] {
				nl.Spans = append(nl.Spans, s)
			}
		}
		for i, r := range l.Ranges {
			if !gone[[3]int{li, 0, i}] {
				nl.Ranges = append(nl.Ranges, r)
			}
		}
		if len(nl.Spans)+len(nl.Ranges) > 0 {
			q.Layers = append(q.Layers, nl)
		}
	}
	return q
}
