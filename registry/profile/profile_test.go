package profile

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

var (
	manifest = digest.FromString("manifest")
	other    = digest.FromString("other manifest")
	layerA   = digest.FromString("layer a")
	layerB   = digest.FromString("layer b")
	foreign  = digest.FromString("another image's layer")
)

// image is the image the profiles below claim: two indexed layers.
var image = []IndexedLayer{
	{Digest: layerA, Spans: 10, UncompressedSize: 100 * PageSize},
	{Digest: layerB, Spans: 3, UncompressedSize: 10*PageSize + 1},
}

func sorted(ls ...Layer) []Layer {
	if len(ls) == 2 && ls[0].Digest > ls[1].Digest {
		ls[0], ls[1] = ls[1], ls[0]
	}
	return ls
}

func valid() Profile {
	return Profile{Version: Version, Manifest: manifest, Runs: 1, Layers: sorted(
		Layer{Digest: layerA, Spans: []Span{{ID: 0, Count: 1, First: 0}, {ID: 9, Count: 1, First: 2}},
			Ranges: []Range{{Offset: 0, Length: 2 * PageSize, Count: 1}, {Offset: 99 * PageSize, Length: PageSize, Count: 1}}},
		Layer{Digest: layerB, Spans: []Span{{ID: 2, Count: 1, First: 1}},
			Ranges: []Range{{Offset: 10 * PageSize, Length: PageSize, Count: 1}}}, // the partial last page
	)}
}

func TestValidateAccepts(t *testing.T) {
	p := valid()
	b, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(bytes.NewReader(b), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(got, manifest, image, Limits{}); err != nil {
		t.Fatal(err)
	}
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Profile)
		lim  Limits
		want string
	}{
		{"version", func(p *Profile) { p.Version = 2 }, Limits{}, "version 2"},
		{"no manifest", func(p *Profile) { p.Manifest = "" }, Limits{}, "manifest digest"},
		{"another manifest", func(p *Profile) { p.Manifest = other }, Limits{}, "not of"},
		{"no runs", func(p *Profile) { p.Runs = 0 }, Limits{}, "0 runs"},
		{"foreign layer", func(p *Profile) {
			p.Layers = append(p.Layers, Layer{Digest: foreign, Spans: []Span{{ID: 0, Count: 1}}})
			p.Layers = sorted3(p.Layers)
		}, Limits{}, "not an indexed layer"},
		{"bad layer digest", func(p *Profile) { p.Layers[0].Digest = "sha256:zz" }, Limits{}, "digest"},
		{"layer twice", func(p *Profile) { p.Layers[1].Digest = p.Layers[0].Digest }, Limits{}, "ascending"},
		{"empty layer", func(p *Profile) { p.Layers[0].Spans, p.Layers[0].Ranges = nil, nil }, Limits{}, "nothing read"},
		{"span past the zTOC", func(p *Profile) { at(p, layerB).Spans[0].ID = 3 }, Limits{}, "zTOC has 3 spans"},
		{"spans out of order", func(p *Profile) { s := at(p, layerA).Spans; s[0], s[1] = s[1], s[0] }, Limits{}, "spans not in ascending"},
		{"span count", func(p *Profile) { at(p, layerA).Spans[0].Count = 0 }, Limits{}, "count 0"},
		{"range past the layer", func(p *Profile) { at(p, layerB).Ranges[0].Length = 2 * PageSize }, Limits{}, "past the layer"},
		{"range not page aligned", func(p *Profile) { at(p, layerA).Ranges[0].Offset = 1 }, Limits{}, "whole 4096-byte pages"},
		{"range negative", func(p *Profile) { at(p, layerA).Ranges[0].Offset = -PageSize }, Limits{}, "whole"},
		{"range overflow", func(p *Profile) {
			at(p, layerA).Ranges[1] = Range{Offset: 1 << 62, Length: 1 << 62, Count: 1}
		}, Limits{}, "whole"},
		{"ranges overlap", func(p *Profile) { at(p, layerA).Ranges[1].Offset = PageSize }, Limits{}, "overlap"},
		{"range count", func(p *Profile) { at(p, layerA).Ranges[0].Count = -1 }, Limits{}, "count -1"},
		{"too many entries", func(p *Profile) {}, Limits{MaxEntries: 4}, "6 entries, at most 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := valid()
			tc.edit(&p)
			err := Validate(p, manifest, image, tc.lim)
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrInvalid saying %q", err, tc.want)
			}
		})
	}
}

func sorted3(ls []Layer) []Layer {
	for i := range ls {
		for j := i + 1; j < len(ls); j++ {
			if ls[j].Digest < ls[i].Digest {
				ls[i], ls[j] = ls[j], ls[i]
			}
		}
	}
	return ls
}

func at(p *Profile, d digest.Digest) *Layer {
	for i := range p.Layers {
		if p.Layers[i].Digest == d {
			return &p.Layers[i]
		}
	}
	panic("no layer")
}

func TestParseRejects(t *testing.T) {
	good, _ := Marshal(valid())
	for name, body := range map[string]string{
		"oversized":      string(good) + strings.Repeat(" ", 10),
		"unknown field":  `{"version":1,"bogus":1}`,
		"trailing":       string(good) + `{}`,
		"not json":       `spans`,
		"wrong type":     `{"version":"1"}`,
		"shape (no run)": strings.Replace(string(good), `"runs":1`, `"runs":0`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(strings.NewReader(body), Limits{MaxBytes: len(good) + 5}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestMergeCounts(t *testing.T) {
	a := valid()
	b := Profile{Version: Version, Manifest: manifest, Runs: 2, Layers: []Layer{
		{Digest: layerA, Spans: []Span{{ID: 0, Count: 2, First: 5}, {ID: 4, Count: 1, First: 0}},
			Ranges: []Range{{Offset: PageSize, Length: 3 * PageSize, Count: 2}}},
	}}
	m, err := Merge(Limits{}, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Runs != 3 {
		t.Errorf("runs %d, want 3", m.Runs)
	}
	la := at(&m, layerA)
	wantSpans := []Span{{ID: 0, Count: 3, First: 0}, {ID: 4, Count: 1, First: 0}, {ID: 9, Count: 1, First: 2}}
	if !equal(la.Spans, wantSpans) {
		t.Errorf("spans %v, want %v", la.Spans, wantSpans)
	}
	wantRanges := []Range{
		{Offset: 0, Length: PageSize, Count: 1},
		{Offset: PageSize, Length: PageSize, Count: 3},
		{Offset: 2 * PageSize, Length: 2 * PageSize, Count: 2},
		{Offset: 99 * PageSize, Length: PageSize, Count: 1},
	}
	if !equal(la.Ranges, wantRanges) {
		t.Errorf("ranges %v, want %v", la.Ranges, wantRanges)
	}
	if err := Validate(m, manifest, image, Limits{}); err != nil {
		t.Fatalf("merged profile invalid: %v", err)
	}
	// Deterministic and independent of order.
	m2, err := Merge(Limits{}, b, a)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := Marshal(m)
	y, _ := Marshal(m2)
	if !bytes.Equal(x, y) {
		t.Errorf("merge depends on order:\n%s\n%s", x, y)
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMergeRejects(t *testing.T) {
	a, b := valid(), valid()
	b.Manifest = other
	if _, err := Merge(Limits{}, a, b); !errors.Is(err, ErrInvalid) {
		t.Errorf("merging two manifests: %v", err)
	}
	b = valid()
	b.Runs = 0
	if _, err := Merge(Limits{}, a, b); !errors.Is(err, ErrInvalid) {
		t.Errorf("merging a bad profile: %v", err)
	}
	if _, err := Merge(Limits{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("merging nothing: %v", err)
	}
}

func TestMergeBounds(t *testing.T) {
	a := valid()
	b := valid()
	at(&b, layerA).Spans = at(&b, layerA).Spans[:1] // span 0 now counts 2, span 9 counts 1
	m, err := Merge(Limits{MaxEntries: 4}, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(m, Limits{MaxEntries: 4}); err != nil {
		t.Fatal(err)
	}
	// Counts 2: span 0 of A, span 2 of B, ranges of A [0,2p) and B's; all
	// others count 2 as well except span 9 of A, which is dropped first.
	for _, s := range at(&m, layerA).Spans {
		if s.ID == 9 {
			t.Errorf("the least-counted span survived: %+v", m)
		}
	}
	// A byte bound drops entries too, and the result still fits.
	enc, _ := Marshal(valid())
	m, err = Merge(Limits{MaxBytes: len(enc) - 60}, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if enc2, _ := Marshal(m); len(enc2) > len(enc)-60 {
		t.Errorf("merged profile of %d bytes over a bound of %d", len(enc2), len(enc)-60)
	}
	if _, err := Merge(Limits{MaxBytes: 10}, a); !errors.Is(err, ErrInvalid) {
		t.Errorf("a bound no profile fits: %v", err)
	}
}

// FuzzParse: whatever a node sends, Parse never panics, and what it accepts
// passes Check, re-encodes within the bound and merges with itself.
func FuzzParse(f *testing.F) {
	good, _ := Marshal(valid())
	f.Add(good)
	f.Add([]byte(`{"version":1,"manifest":"` + string(manifest) + `","runs":1,"layers":[]}`))
	f.Add([]byte(`{"version":1,"layers":[{"ranges":[{"offset":-1}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		lim := Limits{MaxBytes: 4096, MaxEntries: 64}
		p, err := Parse(bytes.NewReader(body), lim)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if err := Check(p, lim); err != nil {
			t.Fatal(err)
		}
		_ = Validate(p, manifest, image, lim)
		m, err := Merge(lim, p, p)
		if err != nil {
			return // twice the counts can need more bytes than the bound
		}
		if err := Check(m, lim); err != nil {
			t.Fatalf("merge result fails Check: %v", err)
		}
	})
}
