package imagegen

import (
	"encoding/binary"
	"math/bits"
)

// rng is wyrand: tiny, fast (one multiply per 8 bytes) and fully specified
// here, so content never changes with the Go release the way math/rand's
// generators are allowed to.
type rng struct{ s uint64 }

func newRNG(seeds ...int64) *rng {
	r := &rng{s: 0x9e3779b97f4a7c15}
	for _, s := range seeds {
		r.s = mix64(r.s ^ uint64(s))
	}
	return r
}

// mix64 is the splitmix64 finalizer; it turns related seeds (layer seed,
// file index) into unrelated PRNG states.
func mix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *rng) next() uint64 {
	r.s += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(r.s, r.s^0xe7037ed1a0b428db)
	return hi ^ lo
}

// intn returns a value in [0, n) for n > 0 (Lemire's multiply-shift; the
// tiny bias is irrelevant for synthetic content).
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

// fill writes PRNG bytes into p.
func (r *rng) fill(p []byte) {
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, r.next())
		p = p[8:]
	}
	if len(p) > 0 {
		v := r.next()
		for i := range p {
			p[i] = byte(v)
			v >>= 8
		}
	}
}
