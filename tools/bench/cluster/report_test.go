package cluster

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/hermes-oci/hermes/tests/harness"
)

// row is one mode's medians for one image, as written to cluster.json.
type row struct {
	Image       string  `json:"image"`
	Link        string  `json:"link"`
	ImageBytes  int64   `json:"image_bytes"`
	Layers      int     `json:"layers"`
	Mode        string  `json:"mode"`
	Reps        int     `json:"reps"`
	ReadySec    float64 `json:"median_pod_ready_seconds"`
	HTTPSec     float64 `json:"median_first_http_200_seconds"`
	OriginBytes int64   `json:"median_origin_bytes"`
	Runs        []run   `json:"runs,omitempty"`
}

type imageSummary struct {
	Image          string  `json:"image"`
	Link           string  `json:"link"`
	ImageBytes     int64   `json:"image_bytes"`
	WorkloadFiles  int     `json:"workload_files"`
	LimitBytes     int64   `json:"limit_bytes"` // deflate blocks holding the workload's files
	HermesIndexSec float64 `json:"hermes_index_seconds"`
	SociIndexSec   float64 `json:"soci_convert_seconds"`
	Rows           []row   `json:"modes"`
}

// modeNames are the table's names for the modes.
var modeNames = map[string]string{
	"overlayfs": "overlayfs", "soci": "upstream soci", "hermes": "hermes", "limit": "limit",
}

func summarize(im *benchImage) imageSummary {
	s := imageSummary{Image: im.name, Link: im.link, ImageBytes: im.size, WorkloadFiles: len(im.files),
		LimitBytes: im.limit, HermesIndexSec: im.hermesIdx, SociIndexSec: im.sociBuild}
	med := func(mode string) row {
		rs := im.runs[mode]
		var ready, web, bytes []float64
		for _, r := range rs {
			ready, web, bytes = append(ready, r.ReadySec), append(web, r.HTTPSec), append(bytes, float64(r.OriginBytes))
		}
		return row{Image: im.name, Link: im.link, ImageBytes: im.size, Layers: im.layers, Mode: mode, Reps: len(rs),
			ReadySec: harness.Median(ready), HTTPSec: harness.Median(web), OriginBytes: int64(harness.Median(bytes)), Runs: rs}
	}
	for _, m := range []string{"overlayfs", "soci", "hermes"} {
		s.Rows = append(s.Rows, med(m))
	}
	// The physical limit: a warm local start plus the deflate blocks
	// holding the workload's files over the link.
	warm := med("warm")
	transfer := float64(im.limit) * 8 / im.bps
	s.Rows = append(s.Rows, row{Image: im.name, Link: im.link, ImageBytes: im.size, Layers: im.layers, Mode: "limit", Reps: warm.Reps,
		ReadySec: warm.ReadySec + transfer, HTTPSec: warm.HTTPSec + transfer, OriginBytes: im.limit, Runs: warm.Runs})
	return s
}

func report(b *testing.B, images []*benchImage, reps int) {
	var sums []imageSummary
	var t strings.Builder
	fmt.Fprintf(&t, "Cluster benchmark: single-node cluster, medians of %d, times from Pod creation\n", reps)
	fmt.Fprintf(&t, "%-6s %-8s %-14s %10s %10s %12s %9s %9s\n", "image", "link", "mode", "Pod Ready", "HTTP 200", "origin", "ovl/x Rdy", "ovl/x 200")
	for _, im := range images {
		s := summarize(im)
		sums = append(sums, s)
		ovl := s.Rows[0]
		for _, r := range s.Rows {
			fmt.Fprintf(&t, "%-6s %-8s %-14s %9.2fs %9.2fs %9.1f MB %8.1fx %8.1fx\n", r.Image, r.Link, modeNames[r.Mode],
				r.ReadySec, r.HTTPSec, float64(r.OriginBytes)/1e6, ovl.ReadySec/r.ReadySec, ovl.HTTPSec/r.HTTPSec)
		}
		h, soci, lim := s.Rows[2], s.Rows[1], s.Rows[3]
		fmt.Fprintf(&t, "       %s, %.2f GB gzip in %d layers; workload opens %d files (%.1f MB of deflate blocks); index build: hermes %.1f s, soci convert %.1f s; hermes/soci %.2f (Ready), hermes/limit %.2f (Ready)\n",
			s.Image, float64(s.ImageBytes)/1e9, ovl.Layers, s.WorkloadFiles, float64(s.LimitBytes)/1e6, s.HermesIndexSec, s.SociIndexSec,
			h.ReadySec/soci.ReadySec, h.ReadySec/lim.ReadySec)
	}
	harness.WriteBench(b, "cluster", sums, t.String())
	p := filepath.Join(harness.BenchOut(b), "cluster.png")
	if err := chart(p, sums); err != nil {
		b.Fatalf("chart: %v", err)
	}
	b.Logf("chart: %s", p)
}

var modeColors = []color.RGBA{
	{0x9e, 0x9e, 0x9e, 0xff}, // overlayfs
	{0xe6, 0x8a, 0x00, 0xff}, // upstream soci
	{0x1f, 0x6f, 0xd1, 0xff}, // hermes
	{0x2e, 0x9e, 0x4f, 0xff}, // limit
}

// chart draws Pod Ready (solid) and first HTTP 200 (light) per image and
// mode on a log scale, seconds.
func chart(path string, sums []imageSummary) error {
	const W, H, left, top, bottom = 1000, 480, 60, 40, 70
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	face := basicfont.Face7x13
	text := func(x, y int, s string, c color.Color) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	lo, hi := 0.1, 1.0
	for _, s := range sums {
		for _, r := range s.Rows {
			hi = math.Max(hi, math.Max(r.ReadySec, r.HTTPSec))
		}
	}
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	plotH := H - top - bottom
	y := func(v float64) int {
		v = math.Max(v, lo)
		return H - bottom - int(float64(plotH)*math.Log10(v/lo)/math.Log10(hi/lo))
	}
	grey := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	for v := lo; v <= hi*1.001; v *= 10 {
		yy := y(v)
		for x := left; x < W-10; x++ {
			img.Set(x, yy, grey)
		}
		text(5, yy+4, fmt.Sprintf("%gs", v), color.Black)
	}
	text(left, 20, "Pod Ready (solid) and first HTTP 200 (light), seconds, log scale; medians", color.Black)
	group := (W - left - 20) / max(len(sums), 1)
	bar := group / 10
	for i, s := range sums {
		x0 := left + i*group + bar
		for j, r := range s.Rows {
			c := modeColors[j%len(modeColors)]
			light := color.RGBA{uint8(255 - (255-int(c.R))/3), uint8(255 - (255-int(c.G))/3), uint8(255 - (255-int(c.B))/3), 0xff}
			bx := x0 + j*2*bar
			fill(img, bx, y(r.ReadySec), bx+bar, H-bottom, c)
			fill(img, bx+bar, y(r.HTTPSec), bx+2*bar-2, H-bottom, light)
		}
		text(x0, H-bottom+18, fmt.Sprintf("%s (%s)", s.Image, s.Link), color.Black)
	}
	for j, m := range []string{"overlayfs", "upstream soci", "hermes", "limit"} {
		fill(img, left+j*160, H-25, left+j*160+14, H-11, modeColors[j])
		text(left+j*160+20, H-13, m, color.Black)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), image.NewUniform(c), image.Point{}, draw.Src)
}
