package gzindex

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"testing"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	"github.com/opencontainers/go-digest"
)

// bigFiles is a tar of incompressible files of up to 6 MiB between small
// text files, as in a layer of shared libraries or model weights.
func bigFiles(t testing.TB, seed int64, n int) ([]byte, map[string][]byte) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := map[string][]byte{}
	for i := 0; i < n; i++ {
		size := 64<<10 + rng.Intn(6<<20)
		if i%3 == 2 {
			size = rng.Intn(4 << 10)
		}
		data := make([]byte, size)
		if i%3 == 2 {
			for j := range data {
				data[j] = "small text\n"[j%11]
			}
		} else {
			rng.Read(data)
		}
		name := fmt.Sprintf("lib/f%03d", i)
		files[name] = data
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	return buf.Bytes(), files
}

// TestAlignedFiles: with alignment, every large file's data starts within a
// deflate block of a checkpoint, and the zTOC stays valid for soci: span
// digests match the blob and every file extracts to its content.
func TestAlignedFiles(t *testing.T) {
	const span, from = 1 << 20, 256 << 10
	for _, tc := range []struct {
		name          string
		level, member int
	}{
		{"level 6", 6, 0},
		{"level 1", 1, 0},
		{"members of 3 MiB", 6, 3 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, files := bigFiles(t, 7, 40)
			blob := gz(t, raw, tc.level, tc.member, "aligned")
			plain, err := Build(bytes.NewReader(blob), span, "test")
			if err != nil {
				t.Fatal(err)
			}
			z, err := BuildWith(oneByte{bytes.NewReader(blob)}, Options{SpanSize: span, BuildToolIdentifier: "test", AlignFilesFrom: from})
			if err != nil {
				t.Fatal(err)
			}
			// Through soci's serialization, as the snapshotter reads it.
			m, _, err := ztoc.Marshal(z)
			if err != nil {
				t.Fatal(err)
			}
			if z, err = ztoc.Unmarshal(m); err != nil {
				t.Fatal(err)
			}
			zi, err := z.Zinfo()
			if err != nil {
				t.Fatal(err)
			}
			defer zi.Close()
			size := compression.Offset(len(blob))
			if int(zi.MaxSpanID())+1 != len(z.SpanDigests) {
				t.Fatalf("%d spans, %d digests", zi.MaxSpanID()+1, len(z.SpanDigests))
			}
			for id := compression.SpanID(0); id <= zi.MaxSpanID(); id++ {
				s, e := zi.StartCompressedOffset(id), zi.EndCompressedOffset(id, size)
				if got := digest.FromBytes(blob[s:e]); got != z.SpanDigests[id] {
					t.Fatalf("span %d [%d,%d): digest %s, zTOC says %s", id, s, e, got, z.SpanDigests[id])
				}
			}
			sr := io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob)))
			aligned, large := 0, 0
			for _, f := range z.FileMetadata {
				got, err := z.ExtractFile(sr, f.Name)
				if err != nil {
					t.Fatalf("%s: %v", f.Name, err)
				}
				if sha256.Sum256(got) != sha256.Sum256(files[f.Name]) {
					t.Fatalf("%s: extracted content differs", f.Name)
				}
				if f.UncompressedSize < from {
					continue
				}
				large++
				start := zi.StartUncompressedOffset(zi.UncompressedOffsetToSpanID(f.UncompressedOffset))
				// A deflate block of incompressible data holds at most
				// 64 KiB; the previous checkpoint may be up to span/16 back.
				if lead := f.UncompressedOffset - start; lead <= 64<<10 {
					aligned++
				} else if lead > span/16+64<<10 {
					t.Errorf("%s begins %d bytes into its span", f.Name, lead)
				}
			}
			t.Logf("%d of %d large files aligned; %d spans (%d without alignment)", aligned, large, zi.MaxSpanID()+1, plain.MaxSpanID+1)
			if aligned < large*3/4 {
				t.Errorf("only %d of %d large files begin within a block of a checkpoint", aligned, large)
			}
			if z.MaxSpanID <= plain.MaxSpanID {
				t.Errorf("alignment added no checkpoints: %d spans, %d without", z.MaxSpanID+1, plain.MaxSpanID+1)
			}
		})
	}
}
