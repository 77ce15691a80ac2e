package gc

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// InUse remembers when this process last used each digest (a blob read or
// pushed, a digest a manifest PUT names), so that the collector keeps what
// a push in flight relies on. Touch and the collector's deletion of the
// same digest are serialized: a Touch returns either before the deletion
// is decided (the digest is kept) or after it is done (the caller sees the
// blob gone). A nil *InUse ignores touches.
type InUse struct {
	seed    maphash.Seed
	now     func() time.Time
	stripes [64]stripe
}

type stripe struct {
	mu   sync.Mutex
	last map[digest.Digest]time.Time
}

// NewInUse returns an empty InUse.
func NewInUse() *InUse {
	u := &InUse{seed: maphash.MakeSeed(), now: time.Now}
	for i := range u.stripes {
		u.stripes[i].last = map[digest.Digest]time.Time{}
	}
	return u
}

func (u *InUse) stripe(d digest.Digest) *stripe {
	return &u.stripes[maphash.String(u.seed, string(d))%uint64(len(u.stripes))]
}

// Touch records that ds are in use now.
func (u *InUse) Touch(ds ...digest.Digest) {
	if u == nil {
		return
	}
	now := u.now()
	for _, d := range ds {
		if d == "" {
			continue
		}
		s := u.stripe(d)
		s.mu.Lock()
		s.last[d] = now
		s.mu.Unlock()
	}
}

// deleteUnused runs del with d's stripe locked unless d was touched at or
// after since; it reports whether del ran.
func (u *InUse) deleteUnused(d digest.Digest, since time.Time, del func() error) (bool, error) {
	if u == nil {
		return true, del()
	}
	s := u.stripe(d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.last[d]; ok && !t.Before(since) {
		return false, nil
	}
	return true, del()
}

// forget drops uses older than before: they no longer protect anything.
func (u *InUse) forget(before time.Time) {
	if u == nil {
		return
	}
	for i := range u.stripes {
		s := &u.stripes[i]
		s.mu.Lock()
		for d, t := range s.last {
			if t.Before(before) {
				delete(s.last, d)
			}
		}
		s.mu.Unlock()
	}
}
