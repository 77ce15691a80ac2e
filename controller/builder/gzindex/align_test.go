package gzindex

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	"github.com/opencontainers/go-digest"
)

// bigFiles is a tar of files of up to 6 MiB, incompressible (names ending
// in "r") and compressible, between small text files, as in a layer of
// shared libraries or model weights.
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
		name := fmt.Sprintf("lib/f%03d", i)
		switch i % 3 {
		case 0:
			rng.Read(data)
			name += "r"
		case 1:
			for j := range data {
				data[j] = "hermes lazy loading\n"[j%20] + byte(rng.Intn(2))
			}
		case 2:
			for j := range data {
				data[j] = "small text\n"[j%11]
			}
		}
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
		byteByByte    bool // the source: chunking must not matter
	}{
		{"level 6", 6, 0, false},
		{"level 1 byte by byte", 1, 0, true},
		{"members of 3 MiB", 6, 3 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, files := bigFiles(t, 7, 24)
			blob := gz(t, raw, tc.level, tc.member, "aligned")
			plain, err := Build(bytes.NewReader(blob), span, "test")
			if err != nil {
				t.Fatal(err)
			}
			var src io.Reader = bytes.NewReader(blob)
			if tc.byteByByte {
				src = oneByte{src}
			}
			z, err := BuildWith(src, Options{SpanSize: span, BuildToolIdentifier: "test", AlignFilesFrom: from})
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
			plainZi, err := plain.Zinfo()
			if err != nil {
				t.Fatal(err)
			}
			defer plainZi.Close()
			// lead is how far before a file's data its span starts: what a
			// lazy read of the whole file fetches in vain.
			lead := func(zi compression.Zinfo, f ztoc.FileMetadata) compression.Offset {
				return f.UncompressedOffset - zi.StartUncompressedOffset(zi.UncompressedOffsetToSpanID(f.UncompressedOffset))
			}
			// trail is how far past a file's end its last span goes.
			trail := func(zi compression.Zinfo, f ztoc.FileMetadata) compression.Offset {
				end := f.UncompressedOffset + f.UncompressedSize
				return zi.EndUncompressedOffset(zi.UncompressedOffsetToSpanID(end-1), z.UncompressedArchiveSize) - end
			}
			sr := io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob)))
			var aligned, random, large int
			var leads, plainLeads, trails, plainTrails compression.Offset
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
				leads += lead(zi, f)
				plainLeads += lead(plainZi, f)
				trails += trail(zi, f)
				plainTrails += trail(plainZi, f)
				if strings.HasSuffix(f.Name, "r") {
					// A deflate block holds at most 64 KiB of incompressible
					// data, but the block a file begins in may also hold the
					// compressible end of the file before.
					random++
					if lead(zi, f) <= 64<<10 {
						aligned++
					}
				}
			}
			t.Logf("%d of %d large incompressible files begin within 64 KiB of a checkpoint; all %d large files begin %d bytes into spans (%d without alignment) and end %d bytes before their spans do (%d without); %d spans (%d without)",
				aligned, random, large, leads, plainLeads, trails, plainTrails, zi.MaxSpanID()+1, plain.MaxSpanID+1)
			if aligned < random/2 {
				t.Errorf("only %d of %d large incompressible files begin within 64 KiB of a checkpoint", aligned, random)
			}
			if leads*4 > plainLeads {
				t.Errorf("alignment leaves large files %d bytes into their spans, %d without", leads, plainLeads)
			}
			if trails*4 > plainTrails {
				t.Errorf("alignment leaves spans %d bytes past the ends of large files, %d without", trails, plainTrails)
			}
			if z.MaxSpanID <= plain.MaxSpanID {
				t.Errorf("alignment added no checkpoints: %d spans, %d without", z.MaxSpanID+1, plain.MaxSpanID+1)
			}
		})
	}
}
