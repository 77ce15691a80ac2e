package cluster

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/awslabs/soci-snapshotter/ztoc"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hermes-oci/hermes/controller/builder/gzindex"
)

// blockSpan is the span size the limit indexes layers with: checkpoints go
// at the first deflate block boundary after every blockSpan uncompressed
// bytes, so a span is one deflate block (or the few needed to reach 64 KiB):
// the finest grain any lazy loader of the unmodified gzip layer can fetch.
const blockSpan = 64 << 10

// offsets is a gzindex Spill that keeps each checkpoint's compressed and
// uncompressed offsets and drops its 32 KiB window.
type offsets struct {
	buf     []byte
	in, out []int64
}

const recordLen = 8 + 8 + 1 + 32768

func (o *offsets) Write(p []byte) (int, error) {
	o.buf = append(o.buf, p...)
	for len(o.buf) >= recordLen {
		r := o.buf[:recordLen]
		o.in = append(o.in, int64(le64(r[0:8])))
		o.out = append(o.out, int64(le64(r[8:16])))
		o.buf = o.buf[recordLen:]
	}
	return len(p), nil
}

func (o *offsets) ReadAt([]byte, int64) (int, error) {
	return 0, errors.New("offsets: checkpoints are not kept")
}

func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// layerBlocks is a layer's block grid and file table.
type layerBlocks struct {
	size    int64 // compressed
	in, out []int64
	files   map[string]ztoc.FileMetadata // path without leading "/"
	deleted map[string]bool              // whiteouts
}

func indexLayer(l v1.Layer) (*layerBlocks, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	o := &offsets{}
	s, err := gzindex.BuildSpilled(rc, gzindex.Options{SpanSize: blockSpan, BuildToolIdentifier: "hermes-bench-limit"}, o)
	if err != nil {
		return nil, err
	}
	size, err := l.Size()
	if err != nil {
		return nil, err
	}
	lb := &layerBlocks{size: size, in: o.in, out: o.out, files: map[string]ztoc.FileMetadata{}, deleted: map[string]bool{}}
	for _, f := range s.Ztoc.TOC.FileMetadata {
		name := strings.TrimPrefix(path.Clean("/"+f.Name), "/")
		if base := path.Base(name); strings.HasPrefix(base, ".wh.") {
			lb.deleted[path.Join(path.Dir(name), strings.TrimPrefix(base, ".wh."))] = true
			continue
		}
		lb.files[name] = f
	}
	return lb, nil
}

// limitBytes is the physical limit's byte count: the compressed bytes of
// the deflate blocks holding the files (image paths) the workload opens,
// each taken from the topmost layer that has it.
func limitBytes(layers []*layerBlocks, files []string) (int64, error) {
	type span struct{ layer, id int }
	need := map[span]bool{}
	for _, f := range files {
		p := strings.TrimPrefix(path.Clean(f), "/")
		for li := len(layers) - 1; li >= 0; li-- {
			l := layers[li]
			m, ok := l.files[p]
			if !ok {
				if l.deleted[p] {
					break
				}
				continue
			}
			if m.Type == "hardlink" { // the data is its target's
				if t, ok := l.files[strings.TrimPrefix(path.Clean("/"+m.Linkname), "/")]; ok {
					m = t
				}
			}
			if m.Type != "reg" || m.UncompressedSize == 0 {
				break
			}
			start, end := int64(m.UncompressedOffset), int64(m.UncompressedOffset)+int64(m.UncompressedSize)
			first := sort.Search(len(l.out), func(i int) bool { return l.out[i] > start }) - 1
			for id := max(first, 0); id < len(l.out) && l.out[id] < end; id++ {
				need[span{li, id}] = true
			}
			break
		}
	}
	var total int64
	for s := range need {
		l := layers[s.layer]
		end := l.size
		if s.id+1 < len(l.in) {
			end = l.in[s.id+1]
		}
		if end < l.in[s.id] {
			return 0, fmt.Errorf("layer %d: checkpoints out of order", s.layer)
		}
		total += end - l.in[s.id]
	}
	return total, nil
}
