package prefetch

import (
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/registry/profile"
)

var (
	layerA = digest.FromString("a")
	layerB = digest.FromString("b")
)

// table makes n spans of 1000 compressed and 4000 uncompressed bytes each.
func table(d digest.Digest, n int) Layer {
	l := Layer{Digest: d}
	for i := range int64(n) {
		l.Spans = append(l.Spans, Span{CompressedStart: 1000 * i, CompressedEnd: 1000 * (i + 1),
			UncompressedStart: 4000 * i, UncompressedEnd: 4000 * (i + 1)})
	}
	return l
}

func prof(layers ...profile.Layer) profile.Profile {
	return profile.Profile{Version: profile.Version, Manifest: digest.FromString("m"), Runs: 1, Layers: layers}
}

func TestPlanMergesAndOrders(t *testing.T) {
	p := prof(
		profile.Layer{Digest: layerA, Spans: []profile.Span{
			{ID: 0, Count: 1, First: 5}, {ID: 1, Count: 1, First: 6}, // adjacent: one request
			{ID: 3, Count: 1, First: 7}, // 1000 bytes after span 1: merged at Gap 1000
			{ID: 9, Count: 1, First: 1}, // far: its own request, used first
		}},
		profile.Layer{Digest: layerB,
			Ranges: []profile.Range{{Offset: 8192, Length: 4096, Count: 1}}}, // uncompressed 8192..12288: spans 2 and 3
	)
	got, err := Plan(p, []Layer{table(layerA, 10), table(layerB, 5)}, Options{Gap: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{
		{Layer: layerA, Offset: 9000, Length: 1000, Spans: []uint32{9}, First: 1},
		{Layer: layerA, Offset: 0, Length: 4000, Spans: []uint32{0, 1, 3}, First: 5},
		{Layer: layerB, Offset: 2000, Length: 2000, Spans: []uint32{2, 3}, First: ^uint32(0)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("plan\n%+v\nwant\n%+v", got, want)
	}
	// The default gap (256 KiB) merges all of A; a negative one only
	// adjacent spans, so span 3 is apart from spans 0–1.
	if got, _ = Plan(p, []Layer{table(layerA, 10), table(layerB, 5)}, Options{}); len(got) != 2 {
		t.Fatalf("default gap: %d requests: %+v", len(got), got)
	}
	if got, _ = Plan(p, []Layer{table(layerA, 10), table(layerB, 5)}, Options{Gap: -1}); len(got) != 4 {
		t.Fatalf("adjacent only: %d requests: %+v", len(got), got)
	}
}

func TestPlanBounds(t *testing.T) {
	var spans []profile.Span
	for i := range uint32(10) {
		spans = append(spans, profile.Span{ID: i, Count: 1, First: 10 - i}) // span 9 used first
	}
	p := prof(profile.Layer{Digest: layerA, Spans: spans})
	got, err := Plan(p, []Layer{table(layerA, 10)}, Options{MaxBytes: 3000, MaxRequest: 2000})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	var ids []uint32
	for _, r := range got {
		total += r.Length
		if r.Length > 2000 {
			t.Errorf("request of %d bytes over MaxRequest", r.Length)
		}
		ids = append(ids, r.Spans...)
	}
	if total != 3000 || !reflect.DeepEqual(ids, []uint32{9, 7, 8}) {
		t.Fatalf("kept %v (%d bytes) in %+v; want the 3 first-used spans 7, 8, 9 in 3000 bytes", ids, total, got)
	}
	// MinCount leaves rare entries out.
	p.Layers[0].Spans[0].Count = 5
	got, _ = Plan(p, []Layer{table(layerA, 10)}, Options{MinCount: 2})
	if len(got) != 1 || !reflect.DeepEqual(got[0].Spans, []uint32{0}) {
		t.Fatalf("MinCount 2: %+v", got)
	}
}

func TestPlanRejectsForeignProfile(t *testing.T) {
	for name, tc := range map[string]struct {
		p    profile.Profile
		want string
	}{
		"unknown layer": {prof(profile.Layer{Digest: layerB, Spans: []profile.Span{{ID: 0, Count: 1}}}), "no span table"},
		"span past":     {prof(profile.Layer{Digest: layerA, Spans: []profile.Span{{ID: 10, Count: 1}}}), "span 10 of 10"},
		"range past":    {prof(profile.Layer{Digest: layerA, Ranges: []profile.Range{{Offset: 40960, Length: 4096, Count: 1}}}), "past the layer"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Plan(tc.p, []Layer{table(layerA, 10)}, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPlanEmpty(t *testing.T) {
	got, err := Plan(prof(), nil, Options{})
	if err != nil || len(got) != 0 {
		t.Fatalf("empty profile: %v, %v", got, err)
	}
}
