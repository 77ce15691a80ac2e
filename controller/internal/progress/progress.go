// Package progress renders builder.Progress events for a terminal or a log:
// on a terminal one line per layer, redrawn in place; elsewhere one line per
// state change.
package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/controller/builder"
)

// Display turns progress events into text. Its Update method is safe for
// concurrent use and can be passed as builder.Request.Progress.
type Display struct {
	w   io.Writer
	tty bool

	mu     sync.Mutex
	order  []string
	layers map[string]builder.Progress
	drawn  int // lines drawn by the last redraw (tty)
}

// New returns a Display writing to w; tty selects in-place redrawing.
func New(w io.Writer, tty bool) *Display {
	return &Display{w: w, tty: tty, layers: map[string]builder.Progress{}}
}

func key(p builder.Progress) string { return p.Manifest.String() + "/" + fmt.Sprint(p.Layer) }

// Update records one event.
func (d *Display) Update(p builder.Progress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := key(p)
	prev, seen := d.layers[k]
	if !seen {
		d.order = append(d.order, k)
	}
	d.layers[k] = p
	if d.tty {
		d.redraw()
		return
	}
	// Plain output: state changes only, so logs stay readable.
	if !seen || prev.State != p.State {
		fmt.Fprintln(d.w, Line(p))
	}
}

// Finish ends the display (leaves the final state on screen).
func (d *Display) Finish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.drawn = 0
}

func (d *Display) redraw() {
	var b strings.Builder
	if d.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d.drawn) // cursor up to the first line
	}
	for _, k := range d.order {
		b.WriteString("\x1b[2K") // clear the line
		b.WriteString(Line(d.layers[k]))
		b.WriteByte('\n')
	}
	d.drawn = len(d.order)
	io.WriteString(d.w, b.String())
}

// Line formats one layer's state.
func Line(p builder.Progress) string {
	head := fmt.Sprintf("%s layer %d/%d %s %9s", platforms.Format(p.Platform), p.Layer+1, p.Layers, short(p.Digest), mb(p.Size))
	switch p.State {
	case builder.LayerFetching:
		pct := 0.0
		if p.Size > 0 {
			pct = 100 * float64(p.Done) / float64(p.Size)
		}
		return fmt.Sprintf("%s  fetching %5.1f%% %s", head, pct, bar(pct))
	case builder.LayerBuilt:
		return fmt.Sprintf("%s  built    ztoc %s", head, short(p.Ztoc))
	case builder.LayerSkipped, builder.LayerFailed:
		return fmt.Sprintf("%s  %-8s %s", head, p.State, p.Reason)
	default:
		return fmt.Sprintf("%s  %s", head, p.State)
	}
}

// short is the first 12 hex digits of a digest, as Docker shows them.
func short(d digest.Digest) string {
	_, hex, _ := strings.Cut(string(d), ":")
	return hex[:min(len(hex), 12)]
}

func mb(n int64) string { return fmt.Sprintf("%.1fMB", float64(n)/1e6) }

func bar(pct float64) string {
	const width = 20
	n := int(pct / 100 * width)
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
}
