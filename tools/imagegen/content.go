package imagegen

import (
	"bytes"
	"encoding/binary"
	"io"
)

// This file generates the content of Compressible layers: text, source code
// and ELF-like shared libraries that look like a real root filesystem to a
// compressor. Everything is drawn from a per-layer vocabulary with skewed
// (roughly Zipf) frequencies, which is what gives real files their ~3:1 gzip
// ratio: frequent words and idioms repeat within deflate's 32 KiB window.

const letters = "etaoinshrdlcumwfgypbvkjxqz"

// vocab is shared by all files of one Compressible layer.
type vocab struct {
	words  [][]byte // lowercase words
	idents [][]byte // identifiers built from words
	types  [][]byte // type names
	insns  [][]byte // machine-code-like byte patterns
}

func newVocab(seed int64) *vocab {
	r := newRNG(seed, 0x766f636162)
	v := &vocab{}
	for i := 0; i < 1200; i++ {
		n := 2 + r.intn(4) + r.intn(5) // 2..9 letters, mostly 4-6
		w := make([]byte, n)
		for j := range w {
			// Skewed letter choice: frequent letters far more often.
			w[j] = letters[r.intn(r.intn(len(letters))+1)]
		}
		v.words = append(v.words, w)
	}
	for i := 0; i < 1500; i++ {
		a, b := v.word(r), v.word(r)
		var id []byte
		switch r.intn(3) {
		case 0: // snake_case
			id = append(append(append(id, a...), '_'), b...)
		case 1: // camelCase
			id = append(append(id, a...), b...)
			id[len(a)] -= 'a' - 'A'
		default:
			id = append(id, a...)
		}
		v.idents = append(v.idents, id)
	}
	for i := 0; i < 60; i++ {
		t := append([]byte{}, v.word(r)...)
		t[0] -= 'a' - 'A'
		v.types = append(v.types, t)
	}
	v.types = append(v.types, []byte("int"), []byte("string"), []byte("error"), []byte("bool"), []byte("[]byte"), []byte("uint64"))
	// Machine-code-like patterns: common x86-64 opcode bytes with operands.
	ops := []byte{0x48, 0x89, 0x8b, 0x83, 0xe8, 0xc3, 0x0f, 0x85, 0x84, 0x74, 0x75, 0x31, 0xc0, 0x45, 0x4c, 0x41, 0x5d, 0x55, 0xff, 0x24, 0x8d, 0x39, 0xeb, 0x90}
	for i := 0; i < 600; i++ {
		n := 1 + r.intn(4) + r.intn(5)
		p := make([]byte, n)
		for j := range p {
			if r.intn(4) == 0 {
				p[j] = byte(r.next())
			} else {
				p[j] = ops[r.intn(r.intn(len(ops))+1)]
			}
		}
		v.insns = append(v.insns, p)
	}
	return v
}

// skew picks an index in [0,n) with frequency falling off roughly like 1/i.
func skew(r *rng, n int) int { return r.intn(r.intn(n) + 1) }

func (v *vocab) word(r *rng) []byte  { return v.words[skew(r, len(v.words))] }
func (v *vocab) ident(r *rng) []byte { return v.idents[skew(r, len(v.idents))] }
func (v *vocab) typ(r *rng) []byte   { return v.types[skew(r, len(v.types))] }

// chunkReader turns a refill function (which appends a natural unit: a
// paragraph, a few lines of code, a run of instructions) into an endless
// io.Reader.
type chunkReader struct {
	buf    []byte
	off    int
	refill func(dst []byte) []byte
}

func (c *chunkReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if c.off == len(c.buf) {
			c.buf = c.refill(c.buf[:0])
			c.off = 0
		}
		k := copy(p[n:], c.buf[c.off:])
		c.off += k
		n += k
	}
	return n, nil
}

// textReader produces prose: sentences of vocabulary words wrapped at ~72
// columns, in paragraphs.
func (v *vocab) textReader(r *rng) io.Reader {
	return &chunkReader{refill: func(b []byte) []byte {
		col := 0
		for s := 3 + r.intn(5); s > 0; s-- {
			for w, nw := 0, 4+r.intn(12); w < nw; w++ {
				word := v.word(r)
				if col+len(word) > 72 {
					b = append(b, '\n')
					col = 0
				} else if col > 0 {
					b = append(b, ' ')
					col++
				}
				start := len(b)
				b = append(b, word...)
				if w == 0 {
					b[start] -= 'a' - 'A'
				}
				col += len(word)
			}
			b = append(b, '.')
			col++
		}
		return append(b, "\n\n"...)
	}}
}

// sourceReader produces C/Go-like source: functions of statements drawn from
// a handful of idioms, with indentation, comments and identifiers.
func (v *vocab) sourceReader(r *rng) io.Reader {
	indent := func(b []byte, d int) []byte {
		for ; d > 0; d-- {
			b = append(b, '\t')
		}
		return b
	}
	return &chunkReader{refill: func(b []byte) []byte {
		// A doc comment, a signature, a body, a closing brace.
		b = append(b, "// "...)
		b = append(b, v.ident(r)...)
		for w := 3 + r.intn(8); w > 0; w-- {
			b = append(append(b, ' '), v.word(r)...)
		}
		b = append(b, ".\nfunc "...)
		b = append(b, v.ident(r)...)
		b = append(b, '(')
		for a := r.intn(4); a > 0; a-- {
			b = append(append(append(b, v.ident(r)...), ' '), v.typ(r)...)
			if a > 1 {
				b = append(b, ", "...)
			}
		}
		b = append(b, ") ("...)
		b = append(append(b, v.typ(r)...), ", error) {\n"...)
		depth := 1
		for s := 3 + r.intn(20); s > 0; s-- {
			b = indent(b, depth)
			switch r.intn(8) {
			case 0:
				b = append(b, "if err := "...)
				b = append(append(b, v.ident(r)...), '(')
				b = append(append(b, v.ident(r)...), "); err != nil {\n"...)
				b = indent(b, depth+1)
				b = append(b, "return nil, fmt.Errorf(\""...)
				b = append(append(b, v.word(r)...), ' ')
				b = append(append(b, v.word(r)...), ": %w\", err)\n"...)
				b = indent(b, depth)
				b = append(b, "}\n"...)
			case 1:
				b = append(append(b, v.ident(r)...), " := "...)
				b = append(append(b, v.ident(r)...), '.')
				b = append(append(b, v.ident(r)...), '(')
				b = append(append(b, v.ident(r)...), ")\n"...)
			case 2:
				b = append(b, "for _, "...)
				b = append(append(b, v.ident(r)...), " := range "...)
				b = append(append(b, v.ident(r)...), " {\n"...)
				depth++
			case 3:
				if depth > 1 {
					b = b[:len(b)-1] // closing brace one level out
					b = append(b, "}\n"...)
					depth--
				} else {
					b = append(b, "// "...)
					b = append(append(b, v.word(r)...), ' ')
					b = append(append(b, v.word(r)...), '\n')
				}
			case 4:
				b = append(b, "// "...)
				for w := 2 + r.intn(8); w > 0; w-- {
					b = append(append(b, v.word(r)...), ' ')
				}
				b = append(b, '\n')
			case 5:
				b = append(append(b, v.ident(r)...), " = append("...)
				b = append(append(b, v.ident(r)...), ", "...)
				b = append(append(b, v.ident(r)...), ")\n"...)
			case 6:
				b = append(b, "if "...)
				b = append(append(b, v.ident(r)...), " == nil {\n"...)
				b = indent(b, depth+1)
				b = append(b, "return nil, nil\n"...)
				b = indent(b, depth)
				b = append(b, "}\n"...)
			default:
				b = append(append(b, v.ident(r)...), "++\n"...)
			}
		}
		for ; depth > 1; depth-- {
			b = indent(b, depth-1)
			b = append(b, "}\n"...)
		}
		b = append(b, "\treturn "...)
		b = append(append(b, v.ident(r)...), ", nil\n}\n\n"...)
		return b
	}}
}

// elfReader produces a shared-library-like file of exactly size bytes: an
// ELF header, then .text (instruction patterns with varying operands),
// .rodata (NUL-terminated strings), .dynstr (symbol names), .data (small
// integers and pointers) and zero padding, in proportions typical of real
// libraries.
func (v *vocab) elfReader(r *rng, size int64) io.Reader {
	var hdr [64]byte
	copy(hdr[:], "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint16(hdr[16:], 3)    // ET_DYN
	binary.LittleEndian.PutUint16(hdr[18:], 0x3e) // x86-64
	binary.LittleEndian.PutUint32(hdr[20:], 1)
	binary.LittleEndian.PutUint16(hdr[52:], 64)
	type section struct {
		n    int64
		fill func(b []byte) []byte
	}
	text := func(b []byte) []byte {
		for i := 0; i < 256; i++ {
			p := v.insns[skew(r, len(v.insns))]
			b = append(b, p...)
			if len(p) >= 5 && r.intn(2) == 0 {
				// A rel32 operand: small displacement, sign-extended.
				d := uint32(int32(r.intn(1<<14) - 1<<13))
				binary.LittleEndian.PutUint32(b[len(b)-4:], d)
			}
		}
		return b
	}
	strs := func(b []byte) []byte {
		for i := 0; i < 32; i++ {
			for w := 1 + r.intn(6); w > 0; w-- {
				b = append(append(b, v.word(r)...), ' ')
			}
			b[len(b)-1] = 0
		}
		return b
	}
	syms := func(b []byte) []byte {
		for i := 0; i < 64; i++ {
			b = append(b, v.ident(r)...)
			if r.intn(3) == 0 {
				b = append(b, "@@GLIBC_2."...)
				b = append(b, byte('2'+r.intn(8)))
			}
			b = append(b, 0)
		}
		return b
	}
	data := func(b []byte) []byte {
		var q [8]byte
		for i := 0; i < 64; i++ {
			var x uint64
			switch r.intn(4) {
			case 0:
				x = 0x5555_5555_0000 | uint64(r.intn(1<<16))&^7
			case 1:
				x = uint64(r.intn(256))
			}
			binary.LittleEndian.PutUint64(q[:], x)
			b = append(b, q[:]...)
		}
		return b
	}
	zero := func(b []byte) []byte { return append(b, make([]byte, 4096)...) }
	rest := max(size-int64(len(hdr)), 0)
	secs := []section{
		{rest * 45 / 100, text},
		{rest * 15 / 100, strs},
		{rest * 10 / 100, syms},
		{rest * 15 / 100, data},
	}
	used := int64(0)
	for _, s := range secs {
		used += s.n
	}
	secs = append(secs, section{rest - used, zero})
	readers := []io.Reader{io.LimitReader(bytes.NewReader(hdr[:]), size)}
	for _, s := range secs {
		readers = append(readers, io.LimitReader(&chunkReader{refill: s.fill}, s.n))
	}
	return io.MultiReader(readers...)
}
