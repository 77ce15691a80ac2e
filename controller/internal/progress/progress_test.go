package progress

import (
	"bytes"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/controller/builder"
)

func TestPlain(t *testing.T) {
	var out bytes.Buffer
	d := New(&out, false)
	l := builder.Progress{Layer: 0, Layers: 2, Digest: digest.FromString("a"), Size: 8 << 20, Platform: builder.DefaultPlatform}
	for _, p := range []builder.Progress{
		{State: builder.LayerPending},
		{State: builder.LayerFetching, Done: 0},
		{State: builder.LayerFetching, Done: 4 << 20}, // same state: no line
		{State: builder.LayerBuilt, Done: 8 << 20, Ztoc: digest.FromString("z")},
	} {
		p.Layer, p.Layers, p.Digest, p.Size, p.Platform = l.Layer, l.Layers, l.Digest, l.Size, l.Platform
		d.Update(p)
	}
	d.Update(builder.Progress{Layer: 1, Layers: 2, Digest: digest.FromString("b"), State: builder.LayerSkipped, Reason: "size 5 is less than min-layer-size 10", Platform: builder.DefaultPlatform})
	d.Finish()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 lines (one per state change), got %d:\n%s", len(lines), out.String())
	}
	if !strings.Contains(lines[2], "built") || !strings.Contains(lines[3], "min-layer-size") || !strings.HasPrefix(lines[0], "linux/amd64 layer 1/2") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestTTY(t *testing.T) {
	var out bytes.Buffer
	d := New(&out, true)
	for i := 0; i < 3; i++ {
		d.Update(builder.Progress{Layer: i % 2, Layers: 2, State: builder.LayerFetching, Size: 100, Done: int64(10 * i)})
	}
	// Every redraw after the first moves the cursor back over the lines.
	if n := strings.Count(out.String(), "\x1b[1A") + strings.Count(out.String(), "\x1b[2A"); n != 2 {
		t.Errorf("%d cursor-up sequences, want 2: %q", n, out.String())
	}
}
