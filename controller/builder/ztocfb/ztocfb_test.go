package ztocfb

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
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/controller/builder/gzindex"
)

// marshal is what soci writes for z with checkpoints cps.
func marshal(t testing.TB, z ztoc.Ztoc, cps []byte) ([]byte, error) {
	t.Helper()
	z.Checkpoints = cps
	r, desc, err := ztoc.Marshal(&z)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != digest.FromBytes(b) || desc.Size != int64(len(b)) {
		t.Fatalf("soci's descriptor %v does not describe its bytes", desc)
	}
	return b, nil
}

// write is what Write writes for z with checkpoints cps, which z itself
// does not carry; the descriptor must describe it.
func write(t testing.TB, z ztoc.Ztoc, cps []byte) ([]byte, error) {
	t.Helper()
	z.Checkpoints = nil
	var out bytes.Buffer
	desc, err := Write(&out, &z, bytes.NewReader(cps), int64(len(cps)))
	if err != nil {
		return nil, err
	}
	if desc.Digest != digest.FromBytes(out.Bytes()) || desc.Size != int64(out.Len()) {
		t.Fatalf("descriptor %v does not describe the %d bytes written", desc, out.Len())
	}
	return out.Bytes(), nil
}

// same requires Write and soci's Marshal to agree on z: the same bytes, or
// both an error.
func same(t *testing.T, name string, z ztoc.Ztoc, cps []byte) {
	t.Helper()
	want, werr := marshal(t, z, cps)
	got, gerr := write(t, z, cps)
	switch {
	case werr != nil || gerr != nil:
		if werr == nil || gerr == nil {
			t.Errorf("%s: soci's error %v, ours %v", name, werr, gerr)
		}
	case !bytes.Equal(got, want):
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Errorf("%s: %d bytes, soci's %d; first difference at %d", name, len(got), len(want), i)
	}
}

// TestSameAsMarshal: for zTOCs of every shape, Write's bytes are
// ztoc.Marshal's.
func TestSameAsMarshal(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	t.Run("empty", func(t *testing.T) {
		same(t, "zero zTOC", ztoc.Ztoc{}, nil)
		same(t, "no files", ztoc.Ztoc{Version: ztoc.Version09, BuildToolIdentifier: "x"}, randomBytes(rng, 12))
	})
	t.Run("checkpoint lengths", func(t *testing.T) {
		// Every residue mod 8 of the checkpoints, with every residue of
		// what comes before them: the stand-in's alignment.
		for n := 0; n < 24; n++ {
			for files := 0; files < 3; files++ {
				z := randomZtoc(rng, files, 0)
				z.BuildToolIdentifier = strings.Repeat("b", n%5)
				same(t, fmt.Sprintf("%d bytes, %d files", n, files), z, randomBytes(rng, n))
			}
		}
	})
	t.Run("random", func(t *testing.T) {
		n := 500
		if testing.Short() {
			n = 100
		}
		for i := 0; i < n; i++ {
			z := randomZtoc(rng, rng.Intn(40), rng.Intn(30))
			same(t, fmt.Sprintf("zTOC %d", i), z, randomBytes(rng, rng.Intn(200<<10)))
		}
	})
	t.Run("many files", func(t *testing.T) {
		z := randomZtoc(rng, 20000, 500)
		same(t, "20000 files", z, randomBytes(rng, 500*(8+8+1+32<<10)+12))
	})
	t.Run("huge checkpoints", func(t *testing.T) {
		z := randomZtoc(rng, 100, 2000)
		same(t, "64 MiB", z, randomBytes(rng, 64<<20+5))
	})
	t.Run("gzindex", func(t *testing.T) {
		blob := gz(t, layerTar(t, 2, 60, 3<<20))
		for _, align := range []int64{0, 256 << 10} {
			for _, span := range []int64{1 << 20, 64 << 10} {
				z, err := gzindex.BuildWith(bytes.NewReader(blob), gzindex.Options{SpanSize: span, BuildToolIdentifier: "test", AlignFilesFrom: align})
				if err != nil {
					t.Fatal(err)
				}
				same(t, fmt.Sprintf("align %d, span %d", align, span), *z, z.Checkpoints)
			}
		}
	})
	t.Run("soci's builder", func(t *testing.T) {
		raw := layerTar(t, 3, 60, 3<<20)
		for _, tc := range []struct {
			algo string
			blob []byte
		}{{compression.Gzip, gz(t, raw)}, {compression.Uncompressed, raw}} {
			p := filepath.Join(t.TempDir(), "layer")
			if err := os.WriteFile(p, tc.blob, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, span := range []int64{4 << 20, 128 << 10} {
				z, err := ztoc.NewBuilder("soci").BuildZtoc(p, span, ztoc.WithCompression(tc.algo))
				if err != nil {
					t.Fatal(err)
				}
				same(t, fmt.Sprintf("%s, span %d", tc.algo, span), *z, z.Checkpoints)
			}
		}
	})
}

func TestErrors(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	z := randomZtoc(rng, 3, 3)
	z.CompressionAlgorithm = "zstd"
	same(t, "unknown algorithm", z, randomBytes(rng, 100))
	if _, err := write(t, z, nil); err == nil {
		t.Error("unknown algorithm: no error")
	}

	z.CompressionAlgorithm = compression.Gzip
	var out bytes.Buffer
	if _, err := Write(&out, &z, bytes.NewReader(make([]byte, 99)), 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short checkpoints: %v", err)
	}
	boom := errors.New("disk gone")
	if _, err := Write(&out, &z, io.MultiReader(bytes.NewReader(make([]byte, 50)), failing{boom}), 100); !errors.Is(err, boom) {
		t.Errorf("failing checkpoints: %v", err)
	}
	if _, err := Write(&out, &z, failing{boom}, MaxSize); err == nil || errors.Is(err, boom) {
		t.Errorf("too large: %v, want a refusal before reading", err)
	}
}

type failing struct{ err error }

func (f failing) Read([]byte) (int, error) { return 0, f.err }

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	rng.Read(b)
	return b
}

// randomString is empty, short, long or not ASCII.
func randomString(rng *rand.Rand) string {
	switch rng.Intn(6) {
	case 0:
		return ""
	case 1:
		return strings.Repeat("long/", 1+rng.Intn(60))
	case 2:
		return "ünïcødé-" + fmt.Sprint(rng.Intn(1000))
	default:
		return string(randomBytes(rng, rng.Intn(20)))
	}
}

// randomZtoc has fields at their zero values (which flatbuffers leaves
// out) as often as not.
func randomZtoc(rng *rand.Rand, files, spans int) ztoc.Ztoc {
	maybe := func(v int64) int64 {
		if rng.Intn(2) == 0 {
			return 0
		}
		return v
	}
	z := ztoc.Ztoc{
		Version:                 ztoc.Version(randomString(rng)),
		BuildToolIdentifier:     randomString(rng),
		CompressedArchiveSize:   compression.Offset(maybe(rng.Int63())),
		UncompressedArchiveSize: compression.Offset(maybe(rng.Int63())),
	}
	z.MaxSpanID = compression.SpanID(maybe(int64(rng.Int31())))
	z.CompressionAlgorithm = []string{"", compression.Gzip, compression.Uncompressed}[rng.Intn(3)]
	for i := 0; i < spans; i++ {
		z.SpanDigests = append(z.SpanDigests, digest.FromBytes(randomBytes(rng, 8)))
	}
	zones := []*time.Location{time.UTC, time.FixedZone("x", 3600*rng.Intn(12)), time.Local}
	for i := 0; i < files; i++ {
		f := ztoc.FileMetadata{
			Name:               randomString(rng),
			Type:               []string{"reg", "dir", "symlink", "hardlink", "char", "block", "fifo", ""}[rng.Intn(8)],
			UncompressedOffset: compression.Offset(maybe(rng.Int63())),
			UncompressedSize:   compression.Offset(maybe(rng.Int63())),
			Linkname:           randomString(rng),
			Mode:               maybe(rng.Int63n(1 << 16)),
			UID:                int(maybe(rng.Int63n(1<<33) - 1<<32)),
			GID:                int(maybe(rng.Int63n(1 << 20))),
			Uname:              randomString(rng),
			Gname:              randomString(rng),
			Devmajor:           maybe(rng.Int63()),
			Devminor:           maybe(rng.Int63()),
		}
		switch rng.Intn(4) {
		case 0: // the zero time
		case 1:
			f.ModTime = time.Date(10000+rng.Intn(10), 1, 1, 0, 0, 0, 0, time.UTC) // MarshalText refuses it
		default:
			f.ModTime = time.Unix(rng.Int63n(1<<34), maybe(rng.Int63n(1e9))).In(zones[rng.Intn(len(zones))])
		}
		if rng.Intn(3) > 0 {
			f.PAXHeaders = map[string]string{}
			for k := rng.Intn(6); k > 0; k-- {
				f.PAXHeaders["SCHILY.xattr."+randomString(rng)] = randomString(rng)
			}
		}
		z.FileMetadata = append(z.FileMetadata, f)
	}
	return z
}

// layerTar is a tar of n entries of every kind zTOCs describe, regular
// files of up to maxSize bytes (random or text), with PAX records.
func layerTar(t testing.TB, seed int64, n, maxSize int) []byte {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, data []byte) {
		h.ModTime = time.Unix(1700000000+int64(rng.Intn(1000)), 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	for i := 0; i < n; i++ {
		data := make([]byte, rng.Intn(maxSize))
		if i%2 == 0 {
			rng.Read(data)
		} else {
			for j := range data {
				data[j] = "lazy layers\n"[j%12]
			}
		}
		h := &tar.Header{Name: fmt.Sprintf("d/f%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), Uid: i, Uname: "u"}
		if i%4 == 0 {
			h.PAXRecords = map[string]string{"SCHILY.xattr.user.a": "1", "SCHILY.xattr.security.b": fmt.Sprint(i)}
		}
		add(h, data)
		switch i % 10 {
		case 3:
			add(&tar.Header{Name: h.Name + ".l", Typeflag: tar.TypeSymlink, Linkname: h.Name}, nil)
		case 6:
			add(&tar.Header{Name: h.Name + ".h", Typeflag: tar.TypeLink, Linkname: h.Name}, nil)
		case 9:
			add(&tar.Header{Name: h.Name + ".c", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, nil)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
