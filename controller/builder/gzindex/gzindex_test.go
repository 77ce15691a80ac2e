package gzindex

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/awslabs/soci-snapshotter/ztoc"
)

// tarball writes a tar of n files with a mix of content: incompressible,
// text, zeros, links and directories, some with long names and xattrs.
func tarball(t testing.TB, seed int64, n int, maxSize int) []byte {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	write := func(h *tar.Header, data []byte) {
		h.ModTime = mtime
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	write(&tar.Header{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	for i := 0; i < n; i++ {
		size := rng.Intn(maxSize + 1)
		data := make([]byte, size)
		switch i % 3 {
		case 0:
			rng.Read(data)
		case 1:
			for j := range data {
				data[j] = "hermes lazy loading\n"[j%20] + byte(rng.Intn(2))
			}
		}
		name := fmt.Sprintf("dir/file-%d", i)
		if i%7 == 0 {
			name = "dir/" + strings.Repeat("long", 40) + fmt.Sprint(i)
		}
		h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size), Uid: i, Uname: "u"}
		if i%5 == 0 {
			h.PAXRecords = map[string]string{"SCHILY.xattr.user.k": fmt.Sprint(i)}
		}
		write(h, data)
		if i%11 == 0 {
			write(&tar.Header{Name: name + ".sym", Typeflag: tar.TypeSymlink, Linkname: name}, nil)
			write(&tar.Header{Name: name + ".hard", Typeflag: tar.TypeLink, Linkname: name}, nil)
		}
	}
	write(&tar.Header{Name: "dir/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}, nil)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gz compresses data at level, as members of at most memberSize bytes of
// input each (0: one member), with name in the header's name and extra
// fields.
func gz(t testing.TB, data []byte, level, memberSize int, name string) []byte {
	t.Helper()
	var out bytes.Buffer
	for len(data) > 0 || out.Len() == 0 {
		part := data
		if memberSize > 0 && len(part) > memberSize {
			part = part[:memberSize]
		}
		data = data[len(part):]
		zw, err := gzip.NewWriterLevel(&out, level)
		if err != nil {
			t.Fatal(err)
		}
		// A long extra field moves the first checkpoint past the first
		// input chunk.
		zw.Name = name[:min(len(name), 100)]
		zw.Extra = []byte(name)
		if _, err := zw.Write(part); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

// soci builds the zTOC the way soci-snapshotter does, from a file.
func soci(t testing.TB, blob []byte, span int64) ([]byte, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "layer")
	if err := os.WriteFile(p, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	z, err := ztoc.NewBuilder("test").BuildZtoc(p, span)
	if err != nil {
		return nil, err
	}
	r, _, err := ztoc.Marshal(z)
	if err != nil {
		t.Fatal(err)
	}
	return io.ReadAll(r)
}

func ours(t testing.TB, r io.Reader, span int64) ([]byte, *ztoc.Ztoc, error) {
	t.Helper()
	z, err := Build(r, span, "test")
	if err != nil {
		return nil, nil, err
	}
	m, _, err := ztoc.Marshal(z)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(m)
	return b, z, err
}

// oneByte reads one byte per call: chunking must not depend on the source.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// TestSameAsSoci is the conformance test of the one-pass builder against
// soci's file-based builder: for varied layers and span sizes the
// serialized zTOCs are byte-identical.
func TestSameAsSoci(t *testing.T) {
	small := tarball(t, 1, 30, 10<<10)
	big := tarball(t, 2, 200, 400<<10)
	padded := append(bytes.Clone(small), make([]byte, 8192)...) // tar(1)-style record padding
	for _, tc := range []struct {
		name  string
		blob  []byte
		spans []int64
	}{
		{"small", gz(t, small, gzip.DefaultCompression, 0, ""), []int64{4 << 20, 32 << 10}},
		{"big-default", gz(t, big, gzip.DefaultCompression, 0, ""), []int64{4 << 20, 1 << 20, 100 << 10, 33 << 10}},
		{"big-stored", gz(t, big, gzip.NoCompression, 0, ""), []int64{1 << 20, 33 << 10}},
		{"big-best-speed", gz(t, big, gzip.BestSpeed, 0, ""), []int64{1 << 20, 65 << 10}},
		{"big-huffman", gz(t, big, gzip.HuffmanOnly, 0, ""), []int64{1 << 20}},
		{"multi-member", gz(t, big, gzip.DefaultCompression, 3<<20+17, ""), []int64{1 << 20, 40 << 10}},
		{"long-header", gz(t, small, gzip.DefaultCompression, 0, strings.Repeat("n", 20<<10)), []int64{32 << 10}},
		{"padded-tar", gz(t, padded, gzip.DefaultCompression, 0, ""), []int64{32 << 10}},
		{"empty-tar", gz(t, tarball(t, 3, 0, 0), gzip.DefaultCompression, 0, ""), []int64{4 << 20}},
	} {
		spans := tc.spans
		if testing.Short() {
			spans = spans[:1]
		}
		for _, span := range spans {
			t.Run(fmt.Sprintf("%s/span-%d", tc.name, span), func(t *testing.T) {
				want, err := soci(t, tc.blob, span)
				if err != nil {
					t.Fatalf("soci: %v", err)
				}
				got, z, err := ours(t, bytes.NewReader(tc.blob), span)
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				if !bytes.Equal(got, want) {
					sz, _ := ztoc.Unmarshal(bytes.NewReader(want))
					t.Fatalf("zTOC differs from soci's: %d vs %d bytes; spans %d vs %d; files %d vs %d; sizes %d/%d vs %d/%d",
						len(got), len(want), z.MaxSpanID, sz.MaxSpanID, len(z.FileMetadata), len(sz.FileMetadata),
						z.CompressedArchiveSize, z.UncompressedArchiveSize, sz.CompressedArchiveSize, sz.UncompressedArchiveSize)
				}
			})
		}
	}
	t.Run("byte-by-byte source", func(t *testing.T) {
		blob := gz(t, big, gzip.DefaultCompression, 1<<20, "")
		want, err := soci(t, blob, 100<<10)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := ours(t, oneByte{bytes.NewReader(blob)}, 100<<10)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("err %v, equal %v", err, bytes.Equal(got, want))
		}
	})
}

func TestErrors(t *testing.T) {
	blob := gz(t, tarball(t, 4, 20, 50<<10), gzip.DefaultCompression, 0, "")
	for name, in := range map[string][]byte{
		"truncated": blob[:len(blob)/2],
		"not gzip":  bytes.Repeat([]byte("not a gzip stream "), 2000),
		"corrupt":   append(append(bytes.Clone(blob[:200]), 0xff, 0xff, 0xff, 0xff), blob[204:]...),
		"not tar":   gz(t, bytes.Repeat([]byte("x"), 5000), gzip.DefaultCompression, 0, ""),
		"empty":     nil,
	} {
		if _, err := Build(bytes.NewReader(in), 1<<20, "test"); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: got %v, want ErrFormat", name, err)
		}
	}
	boom := errors.New("connection reset")
	if _, err := Build(io.MultiReader(bytes.NewReader(blob[:30000]), iotest{boom}), 1<<20, "test"); !errors.Is(err, boom) {
		t.Errorf("source error: got %v, want it passed through", err)
	}
}

type iotest struct{ err error }

func (e iotest) Read([]byte) (int, error) { return 0, e.err }

// TestMutations damages valid layers at random: whatever soci still
// indexes, Build indexes to the same bytes, and nothing hangs.
func TestMutations(t *testing.T) {
	seeds := [][]byte{
		gz(t, tarball(t, 5, 4, 2<<10), gzip.DefaultCompression, 0, ""),
		gz(t, tarball(t, 6, 6, 8<<10), gzip.NoCompression, 3000, "x"),
		gz(t, tarball(t, 7, 20, 30<<10), gzip.BestSpeed, 0, ""),
	}
	rng := rand.New(rand.NewSource(1))
	n := 600
	if testing.Short() {
		n = 60
	}
	indexed := 0
	for i := 0; i < n; i++ {
		b := bytes.Clone(seeds[i%len(seeds)])
		for k := 0; k < 1+rng.Intn(3); k++ {
			p := rng.Intn(len(b))
			switch rng.Intn(4) {
			case 0:
				b[p] ^= 1 << rng.Intn(8)
			case 1:
				b = b[:p+1]
			case 2:
				b[p] = byte(rng.Intn(256))
			case 3:
				b = append(b[:p:p], append(bytes.Repeat([]byte{byte(rng.Intn(256))}, rng.Intn(64)), b[p:]...)...)
			}
		}
		span := int64(32+rng.Intn(64)) << 10
		done := make(chan struct{})
		go func() {
			defer close(done)
			want, err := soci(t, b, span)
			if err != nil {
				return
			}
			indexed++
			got, _, err := ours(t, bytes.NewReader(b), span)
			if err != nil {
				t.Errorf("input %d: soci indexes it, Build fails: %v", i, err)
			} else if !bytes.Equal(got, want) {
				t.Errorf("input %d: zTOC differs from soci's", i)
			}
		}()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("input %d: still running after a minute", i)
		}
	}
	t.Logf("%d of %d damaged layers still indexable by soci", indexed, n)
}
