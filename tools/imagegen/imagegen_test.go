package imagegen

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/hermes-oci/hermes/tests/harness/need"
)

// smallSpec has one layer of every generated kind except busybox (whose
// bytes come from the host), so its digests depend on this package alone.
func smallSpec() Spec {
	return Spec{
		Layers: []Layer{
			{Kind: Random, Size: 300 << 10, Files: 3, Seed: 1},
			{Kind: Compressible, Size: 1 << 20, Files: 40, Seed: 2},
			{Kind: Files, Entries: []Entry{
				{Name: "etc", Type: tar.TypeDir, Mode: DefaultMode},
				{Name: "etc/hello", Mode: DefaultMode, Content: []byte("hello\n")},
				{Name: "etc/sparse", Mode: 0o600, Size: 3 << 20, Fill: FillSparse, Seed: 3},
				{Name: "etc/text", Size: 10000, Fill: FillText, Seed: 4, Xattrs: map[string]string{"user.a": "b"}},
				{Name: "etc/link", Type: tar.TypeSymlink, Linkname: "hello"},
			}},
			{Kind: Random, Size: 100 << 10, Files: 2, Seed: 5, Uncompressed: true},
		},
		Entrypoint: []string{"/bin/true"},
	}
}

func digests(t *testing.T, img v1.Image) (string, []string) {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var diffs []string
	for _, h := range cfg.RootFS.DiffIDs {
		diffs = append(diffs, h.String())
	}
	return d.String(), diffs
}

func TestDeterministic(t *testing.T) {
	a, err := Image(smallSpec(), WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, a)
	b, err := Image(smallSpec(), WithCacheDir(t.TempDir())) // generated afresh
	if err != nil {
		t.Fatal(err)
	}
	da, diffA := digests(t, a)
	db, diffB := digests(t, b)
	if da != db || strings.Join(diffA, ",") != strings.Join(diffB, ",") {
		t.Fatalf("two builds differ:\n%s %v\n%s %v", da, diffA, db, diffB)
	}
	la, _ := a.Layers()
	lb, _ := b.Layers()
	for i := range la {
		ha, hb := blobSHA(t, la[i]), blobSHA(t, lb[i])
		if ha != hb {
			t.Errorf("layer %d bytes differ: %s vs %s", i, ha, hb)
		}
	}
}

// checkImage verifies every layer's digest, diffID and size against its
// bytes, and runs ggcr's validate.Image when it can: validate assumes every
// layer is gzip, so images with plain tar layers get only our own checks.
func checkImage(t *testing.T, img v1.Image) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	allGzip := true
	for i, l := range layers {
		mt, _ := l.MediaType()
		allGzip = allGzip && mt == types.OCILayer
		d, _ := l.Digest()
		di, _ := l.DiffID()
		if got := blobSHA(t, l); got != d.String() {
			t.Errorf("layer %d: Digest %s, sha256(Compressed) %s", i, d, got)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil || h != di {
			t.Errorf("layer %d: DiffID %s, sha256(Uncompressed) %s (%v)", i, di, h, err)
		}
	}
	if allGzip {
		if err := validate.Image(img); err != nil {
			t.Errorf("validate: %v", err)
		}
	}
}

func blobSHA(t *testing.T, l v1.Layer) string {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// TestGolden pins the output for smallSpec. If it fails, generated content
// changed: if that was intended, bump genVersion (so caches are not reused)
// and update the values. The diffIDs depend only on this package; the image
// digest also on the gzip implementation (klauspost/compress, see
// compressorID).
func TestGolden(t *testing.T) {
	img, err := Image(smallSpec(), WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	d, diffs := digests(t, img)
	wantDiffs := []string{
		"sha256:8849cebb500cda1ae839f929279dec0516f45bc7cd74433867ac7fcff51d6117",
		"sha256:184f19d9b52c993cf8714fa9e49eb114de897d71f681c2c84572eb24e83a1d3b",
		"sha256:1cd7d79b5b7cb6a27f73e843473cc76a5191935e3bcf56b4302a290d541b6f26",
		"sha256:34751e6dbb1f2a056d8461cbf85e189e3f023af6300c4c071a406e567823035d",
	}
	if strings.Join(diffs, "\n") != strings.Join(wantDiffs, "\n") {
		t.Errorf("diffIDs (generated tar content) changed:\n%s", strings.Join(diffs, "\n"))
	}
	const wantDigest = "sha256:afda1df6b6902acb0b132c7ddb71b2bbb6b3d183d9190dbe1d66c4193e01b992"
	if d != wantDigest {
		t.Errorf("image digest changed: %s (compressor %s)", d, compressorID())
	}
}

func TestCacheReuseAndRepair(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Layers: []Layer{{Kind: Random, Size: 64 << 10, Seed: 9}}}
	img, err := Image(spec, WithCacheDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := digests(t, img)
	blobs, _ := filepath.Glob(filepath.Join(dir, "*.blob"))
	if len(blobs) != 1 {
		t.Fatalf("want one cached blob, have %v", blobs)
	}
	fi, _ := os.Stat(blobs[0])
	// Same size, wrong bytes: caught by the digest check, then regenerated.
	if err := os.WriteFile(blobs[0], make([]byte, fi.Size()), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err = Image(spec, WithCacheDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := digests(t, img); got != want {
		t.Fatalf("after repair: %s, want %s", got, want)
	}
	checkImage(t, img)
	// Truncated: caught by the size check.
	if err := os.Truncate(blobs[0], 10); err != nil {
		t.Fatal(err)
	}
	img, err = Image(spec, WithCacheDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img)
}

func TestIndex(t *testing.T) {
	spec := Spec{Layers: []Layer{{Kind: Random, Size: 10 << 10, Seed: 1}}}
	build := func() v1.ImageIndex {
		idx, err := Index(map[string]Spec{"linux/arm64/v8": spec, "linux/amd64": spec}, WithCacheDir(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	idx := build()
	if err := validate.Index(idx); err != nil {
		t.Fatalf("validate: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 {
		t.Fatalf("index: %+v", im)
	}
	if p := im.Manifests[0].Platform; p.Architecture != "amd64" || p.OS != "linux" {
		t.Errorf("first manifest platform %+v, want linux/amd64 (sorted)", p)
	}
	if p := im.Manifests[1].Platform; p.Architecture != "arm64" || p.Variant != "v8" {
		t.Errorf("second manifest platform %+v, want linux/arm64/v8", p)
	}
	arm, err := idx.Image(im.Manifests[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := arm.ConfigFile()
	if cfg.Architecture != "arm64" || cfg.Variant != "v8" || cfg.OS != "linux" {
		t.Errorf("arm64 config says %s/%s/%s", cfg.OS, cfg.Architecture, cfg.Variant)
	}
	d1, _ := idx.Digest()
	d2, _ := build().Digest()
	if d1 != d2 {
		t.Errorf("index digests differ: %s %s", d1, d2)
	}
}

func TestTreeWhiteoutsAndOpaque(t *testing.T) {
	f := func(name, content string) Entry { return Entry{Name: name, Mode: 0o644, Content: []byte(content)} }
	d := func(name string) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: 0o755} }
	spec := Spec{Layers: []Layer{
		{Kind: Files, Entries: []Entry{
			d("a"), f("a/keep", "k"), f("a/del", "x"), d("a/deldir"), f("a/deldir/x", "x"),
			d("o"), f("o/old", "old"), d("o/sub"), f("o/sub/deep", "deep"),
			f("f2d", "file"), d("d2f"), f("d2f/child", "c"),
			f("implicit/parent/file", "p"), // no parent entries
		}},
		{Kind: Files, Entries: []Entry{
			f("a/.wh.del", ""), f("a/.wh.deldir", ""),
			// The opaque marker after a new entry of the same layer must not
			// hide it.
			d("o"), f("o/new", "new"), f("o/.wh..wh..opq", ""),
			d("f2d"), f("f2d/inside", "i"),
			f("d2f", "now a file"),
		}},
		{Kind: Files, Entries: []Entry{f("a/del", "back")}},
	}}
	img, err := Image(spec, WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	present := map[string]byte{
		"a": tar.TypeDir, "a/keep": tar.TypeReg, "a/del": tar.TypeReg, "o": tar.TypeDir, "o/new": tar.TypeReg,
		"f2d": tar.TypeDir, "f2d/inside": tar.TypeReg, "d2f": tar.TypeReg,
		"implicit": tar.TypeDir, "implicit/parent": tar.TypeDir, "implicit/parent/file": tar.TypeReg,
	}
	for p, typ := range present {
		if fi, ok := tr[p]; !ok || fi.Type != typ {
			t.Errorf("%s: present=%v type=%q, want type %q", p, ok, fi.Type, typ)
		}
	}
	for _, p := range []string{"a/deldir", "a/deldir/x", "o/old", "o/sub", "o/sub/deep", "d2f/child", "a/.wh.del", "o/.wh..wh..opq"} {
		if _, ok := tr[p]; ok {
			t.Errorf("%s should be gone", p)
		}
	}
	if got := tr["a/del"].SHA256; got != sha256hex("back") {
		t.Errorf("a/del re-added in layer 3 has sha %s", got)
	}
	if len(tr) != len(present) {
		t.Errorf("tree has %d entries, want %d: %v", len(tr), len(present), keys(tr))
	}
}

func sha256hex(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func keys(m map[string]FileInfo) []string {
	var k []string
	for p := range m {
		k = append(k, p)
	}
	return k
}

func TestInvalidSpecs(t *testing.T) {
	for name, l := range map[string]Layer{
		"absolute name":   {Kind: Files, Entries: []Entry{{Name: "/etc/x"}}},
		"dotdot":          {Kind: Files, Entries: []Entry{{Name: "a/../../x"}}},
		"empty name":      {Kind: Files, Entries: []Entry{{Name: ""}}},
		"link no target":  {Kind: Files, Entries: []Entry{{Name: "x", Type: tar.TypeSymlink}}},
		"bad mode":        {Kind: Files, Entries: []Entry{{Name: "x", Mode: 0o17777}}},
		"unknown type":    {Kind: Files, Entries: []Entry{{Name: "x", Type: 'Z'}}},
		"unknown kind":    {Kind: Kind(42)},
		"bad random root": {Kind: Random, Size: 1, Root: "../up"},
	} {
		_, err := Image(Spec{Layers: []Layer{l}}, WithCacheDir(t.TempDir()))
		if !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: err = %v, want ErrInvalidSpec", name, err)
		}
	}
	if _, err := Image(Spec{Platform: "amd64"}, WithCacheDir(t.TempDir())); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("platform without os: %v", err)
	}
	_, err := Image(Spec{Layers: []Layer{{Kind: Busybox}}}, WithCacheDir(t.TempDir()), WithBusybox(filepath.Join(t.TempDir(), "none")))
	if !errors.Is(err, ErrNoBusybox) {
		t.Errorf("missing busybox: %v", err)
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{"270MiB": 270 << 20, "1.5GB": 1_500_000_000, "4096": 4096, "64k": 64 << 10, "2G": 2 << 30, "10B": 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1XB"} {
		if _, err := ParseSize(bad); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("ParseSize(%q): %v", bad, err)
		}
	}
	ls, err := ParseLayers("busybox, random:270MiB,compressible:300MiB:files=5000:seed=7,random:1k:plain")
	if err != nil {
		t.Fatal(err)
	}
	want := []Layer{
		{Kind: Busybox},
		{Kind: Random, Size: 270 << 20, Seed: 2},
		{Kind: Compressible, Size: 300 << 20, Files: 5000, Seed: 7},
		{Kind: Random, Size: 1 << 10, Seed: 4, Uncompressed: true},
	}
	if len(ls) != len(want) {
		t.Fatalf("got %+v", ls)
	}
	for i := range want {
		if ls[i].Kind != want[i].Kind || ls[i].Size != want[i].Size || ls[i].Files != want[i].Files || ls[i].Seed != want[i].Seed || ls[i].Uncompressed != want[i].Uncompressed {
			t.Errorf("layer %d: %+v, want %+v", i, ls[i], want[i])
		}
	}
	for _, bad := range []string{"", "zip:1M", "random", "random:1M:files=0", "random:1M:x=1", "busybox:1M"} {
		if _, err := ParseLayers(bad); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("ParseLayers(%q): %v", bad, err)
		}
	}
}

// TestCompressibleRatio checks the promise of the Compressible kind: about
// 3:1 with gzip.
func TestCompressibleRatio(t *testing.T) {
	l, err := buildLayer(Layer{Kind: Compressible, Size: 24 << 20, Seed: 1}, &buildEnv{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ratio := float64(l.meta.UncompressedSize) / float64(l.meta.Size)
	t.Logf("compressible: %d -> %d bytes, ratio %.2f", l.meta.UncompressedSize, l.meta.Size, ratio)
	if ratio < 2.6 || ratio > 3.5 {
		t.Errorf("gzip ratio %.2f, want about 3", ratio)
	}
	rl, err := buildLayer(Layer{Kind: Random, Size: 4 << 20, Seed: 1}, &buildEnv{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if r := float64(rl.meta.UncompressedSize) / float64(rl.meta.Size); r > 1.01 {
		t.Errorf("random layer compresses %.3f:1", r)
	}
}

// TestPresetShapes builds tiny versions of the benchmark presets.
func TestPresetShapes(t *testing.T) {
	bb := requireBusybox(t)
	r := PresetRandom(4, 64<<10)
	if len(r.Layers) != 5 || r.Layers[0].Kind != Busybox || r.Layers[4].Size != 64<<10 {
		t.Fatalf("PresetRandom: %+v", r.Layers)
	}
	c := PresetCompressible(4, 4<<20, 400)
	total, files := int64(0), 0
	for _, l := range c.Layers[1:] {
		total += l.Size
		files += l.Files
	}
	if len(c.Layers) != 5 || total != 4<<20 || files != 400 {
		t.Fatalf("PresetCompressible: %+v", c.Layers)
	}
	img, err := Image(c, WithCacheDir(t.TempDir()), WithBusybox(bb))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := Tree(img)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for p, fi := range tr {
		if fi.Type == tar.TypeReg && strings.HasPrefix(p, "tree-") {
			n++
		}
	}
	if n != 400 {
		t.Errorf("compressible tree has %d files, want 400", n)
	}
}

func requireBusybox(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(BusyboxPath); err != nil {
		need.Missing(t, "%s missing (Debian busybox-static)", BusyboxPath)
	}
	return BusyboxPath
}

// TestHugeFileStreams generates a multi-GB file and checks that memory use
// stays flat: content is produced while it is written, never buffered.
func TestHugeFileStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 3 GiB: skipped with -short")
	}
	const size = 3 << 30
	l := Layer{Kind: Files, Uncompressed: true, Entries: []Entry{{Name: "huge", Size: size, Fill: FillSparse, Seed: 1}}}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cw := &countingDiscard{}
	if err := writeLayerTar(cw, l, &buildEnv{}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if cw.n < size {
		t.Fatalf("wrote %d bytes", cw.n)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("allocated %d bytes to stream a %d-byte file", alloc, int64(size))
	}
}

type countingDiscard struct{ n int64 }

func (c *countingDiscard) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// TestConcurrentBuilds builds the same layers from several goroutines into
// one cache directory, as parallel tests do.
func TestConcurrentBuilds(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Layers: []Layer{{Kind: Random, Size: 512 << 10, Seed: 3}, {Kind: Compressible, Size: 512 << 10, Seed: 4}}}
	digests := make(chan string, 6)
	errs := make(chan error, 6)
	for i := 0; i < 6; i++ {
		go func() {
			img, err := Image(spec, WithCacheDir(dir))
			if err != nil {
				errs <- err
				return
			}
			d, err := img.Digest()
			errs <- err
			digests <- d.String()
		}()
	}
	for i := 0; i < 6; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	first := <-digests
	for i := 1; i < 6; i++ {
		if d := <-digests; d != first {
			t.Errorf("concurrent builds disagree: %s vs %s", d, first)
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(tmps) > 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
}
