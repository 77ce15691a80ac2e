package gzindex

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/awslabs/soci-snapshotter/ztoc"

	"github.com/hermes-oci/hermes/controller/builder/ztocfb"
)

// spilled builds blob's zTOC with its checkpoints spilled to a temp file
// and serializes it with ztocfb, as the builder does.
func spilled(t testing.TB, src io.Reader, o Options) ([]byte, *Spilled) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "spill"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	s, err := BuildSpilled(src, o, f)
	if err != nil {
		t.Fatalf("BuildSpilled: %v", err)
	}
	if s.Ztoc.Checkpoints != nil {
		t.Fatal("spilled zTOC carries checkpoints in memory")
	}
	cps, n := s.Checkpoints()
	var out bytes.Buffer
	if _, err := ztocfb.Write(&out, s.Ztoc, cps, n); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), s
}

// TestSpilledSameAsSoci: spilling the checkpoints and streaming the
// serialization changes no byte: unaligned as soci's builder makes them,
// aligned as the in-memory path makes them.
func TestSpilledSameAsSoci(t *testing.T) {
	big := tarball(t, 2, 60, 200<<10)
	aligned, _ := bigFiles(t, 8, 9)
	for _, tc := range []struct {
		name  string
		blob  []byte
		span  int64
		align int64
	}{
		{"small", gz(t, tarball(t, 1, 30, 10<<10), gzip.DefaultCompression, 0, ""), 4 << 20, 0},
		{"big", gz(t, big, gzip.DefaultCompression, 0, ""), 1 << 20, 0},
		{"big-small-spans", gz(t, big, gzip.BestSpeed, 0, ""), 33 << 10, 0},
		{"big-stored", gz(t, big, gzip.NoCompression, 0, ""), 32 << 10, 0},
		{"multi-member", gz(t, big, gzip.DefaultCompression, 1<<20+17, ""), 40 << 10, 0},
		{"empty-tar", gz(t, tarball(t, 3, 0, 0), gzip.DefaultCompression, 0, ""), 4 << 20, 0},
		{"aligned", gz(t, aligned, 6, 0, "aligned"), 1 << 20, 256 << 10},
		{"aligned-members", gz(t, aligned, 1, 2<<20, ""), 64 << 10, 16 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{SpanSize: tc.span, BuildToolIdentifier: "test", AlignFilesFrom: tc.align}
			var want []byte
			if tc.align == 0 {
				var err error
				if want, err = soci(t, tc.blob, tc.span); err != nil {
					t.Fatalf("soci: %v", err)
				}
			} else {
				z, err := BuildWith(bytes.NewReader(tc.blob), o)
				if err != nil {
					t.Fatal(err)
				}
				r, _, err := ztoc.Marshal(z)
				if err != nil {
					t.Fatal(err)
				}
				want, _ = io.ReadAll(r)
			}
			got, s := spilled(t, oneByte{bytes.NewReader(tc.blob)}, o)
			if !bytes.Equal(got, want) {
				t.Fatalf("spilled zTOC differs: %d bytes, want %d", len(got), len(want))
			}
			if _, n := s.Checkpoints(); n != headerSize+int64(s.Ztoc.MaxSpanID+1)*recordSize {
				t.Errorf("%d bytes of checkpoints for %d spans", n, s.Ztoc.MaxSpanID+1)
			}
		})
	}
}

// TestSpillError: a spill that cannot be written fails the build with
// ErrSpill, not as a broken layer or a broken source.
func TestSpillError(t *testing.T) {
	blob := gz(t, tarball(t, 2, 60, 200<<10), gzip.BestSpeed, 0, "")
	for _, after := range []int{0, 3} {
		_, err := BuildSpilled(bytes.NewReader(blob), Options{SpanSize: 64 << 10, BuildToolIdentifier: "test"}, &fullDisk{room: after})
		if !errors.Is(err, ErrSpill) || errors.Is(err, ErrFormat) {
			t.Errorf("spill full after %d writes: %v", after, err)
		}
	}
}

var errNoSpace = errors.New("no space left on device")

// fullDisk takes room writes, then fails.
type fullDisk struct {
	room int
	bytes.Buffer
}

func (f *fullDisk) Write(p []byte) (int, error) {
	if f.room == 0 {
		return 0, errNoSpace
	}
	f.room--
	return f.Buffer.Write(p)
}

func (f *fullDisk) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(f.Bytes()).ReadAt(p, off)
}
