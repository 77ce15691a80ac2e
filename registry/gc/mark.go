package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// ErrUnreadable is wrapped by a run that stopped before sweeping because a
// live manifest's references could not be read: deleting then could remove
// a blob it needs.
var ErrUnreadable = errors.New("manifest references unreadable")

// Refs are the digests a manifest refers to.
type Refs struct {
	// Blobs: config, layers, an artifact manifest's blobs, schema1 layers.
	Blobs []digest.Digest
	// Manifests: an index's children.
	Manifests []digest.Digest
	// Subject is the manifest this one refers to (OCI v1.1), or "".
	Subject digest.Digest
}

// References returns what a manifest of any type distribution stores
// refers to: OCI and Docker image manifests and indexes, OCI artifact
// manifests, Docker schema1. It reads the fields by name, so a media type
// it does not know still yields its descriptors.
func References(payload []byte) (Refs, error) {
	type desc struct {
		Digest digest.Digest `json:"digest"`
	}
	var m struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Blobs     []desc `json:"blobs"`
		Manifests []desc `json:"manifests"`
		Subject   *desc  `json:"subject"`
		FSLayers  []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if err := json.Unmarshal(payload, &m); err != nil {
		return Refs{}, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	var r Refs
	add := func(to *[]digest.Digest, d digest.Digest) error {
		if d == "" {
			return nil
		}
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%w: digest %q: %w", ErrUnreadable, d, err)
		}
		*to = append(*to, d)
		return nil
	}
	var errs []error
	if m.Config != nil {
		errs = append(errs, add(&r.Blobs, m.Config.Digest))
	}
	for _, l := range append(m.Layers, m.Blobs...) {
		errs = append(errs, add(&r.Blobs, l.Digest))
	}
	for _, l := range m.FSLayers {
		errs = append(errs, add(&r.Blobs, l.BlobSum))
	}
	for _, c := range m.Manifests {
		errs = append(errs, add(&r.Manifests, c.Digest))
	}
	if m.Subject != nil && m.Subject.Digest != "" {
		var s []digest.Digest
		errs = append(errs, add(&s, m.Subject.Digest))
		if len(s) == 1 {
			r.Subject = s[0]
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Refs{}, err
	}
	return r, nil
}

// repoState is what one repository holds, as a run found it.
type repoState struct {
	// revisions are the manifests, by the digest in their link path (a
	// sha512 revision links to the sha256 content).
	revisions map[digest.Digest]link
	// tags are the current manifest of each tag.
	tags map[string]digest.Digest
	// tagIndex lists, per manifest digest, the tags whose history names it.
	tagIndex map[digest.Digest][]string
	// layers are the repository's blob links.
	layers map[digest.Digest]link
	// referrers are the referrer records, by referrer digest.
	referrers map[digest.Digest][]record
	// uploads are upload directories and their last activity.
	uploads map[string]time.Time
}

type link struct {
	target digest.Digest // what the link points at; the link's own digest for sha256
	mod    time.Time
}

type record struct {
	subject digest.Digest
	mod     time.Time
}

func newRepoState() *repoState {
	return &repoState{
		revisions: map[digest.Digest]link{}, tags: map[string]digest.Digest{}, tagIndex: map[digest.Digest][]string{},
		layers: map[digest.Digest]link{}, referrers: map[digest.Digest][]record{}, uploads: map[string]time.Time{},
	}
}

// manifestTarget resolves a manifest digest named in repo to its content
// digest; ok is false when repo has no such manifest.
func (r *repoState) manifestTarget(d digest.Digest) (digest.Digest, bool) {
	l, ok := r.revisions[d]
	return l.target, ok
}

// blobTarget resolves a blob digest named in repo to its content digest.
func (r *repoState) blobTarget(d digest.Digest) digest.Digest {
	if l, ok := r.layers[d]; ok && l.target != "" {
		return l.target
	}
	return d
}

// marks are what a mark phase found live.
type marks struct {
	blobs     map[digest.Digest]struct{}            // content digests, global
	manifests map[string]map[digest.Digest]struct{} // repo -> live content digests
	missing   []string                              // live manifests whose content is gone
}

// reader returns a manifest's content by its content digest.
type reader func(ctx context.Context, d digest.Digest) ([]byte, error)

// errMissing is what a reader returns for content that is not there.
var errMissing = errors.New("content missing")

// mark finds every live manifest and blob in repos: roots are tagged
// manifests, referrers, and manifests written at or after cutoff; from a
// live manifest, its children and its subject (when in the repository)
// are live, and so are its blobs and its own content. It reads manifests
// with up to workers reads at once.
func mark(ctx context.Context, repos map[string]*repoState, cutoff time.Time, read reader, workers int) (*marks, error) {
	m := &marks{blobs: map[digest.Digest]struct{}{}, manifests: map[string]map[digest.Digest]struct{}{}}
	type item struct {
		repo   string
		target digest.Digest
	}
	var frontier []item
	push := func(repo string, target digest.Digest) {
		live := m.manifests[repo]
		if _, ok := live[target]; ok {
			return
		}
		live[target] = struct{}{}
		m.blobs[target] = struct{}{}
		frontier = append(frontier, item{repo, target})
	}
	for name, r := range repos {
		m.manifests[name] = map[digest.Digest]struct{}{}
		for _, d := range r.tags {
			if t, ok := r.manifestTarget(d); ok {
				push(name, t)
			}
		}
		for d := range r.referrers {
			if t, ok := r.manifestTarget(d); ok {
				push(name, t)
			}
		}
		for _, l := range r.revisions {
			if !l.mod.Before(cutoff) {
				push(name, l.target)
			}
		}
	}
	for len(frontier) > 0 {
		batch := frontier
		frontier = nil
		bodies := make([][]byte, len(batch))
		missing := make([]bool, len(batch))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(workers)
		var mu sync.Mutex
		for i, it := range batch {
			g.Go(func() error {
				b, err := read(gctx, it.target)
				if errors.Is(err, errMissing) {
					mu.Lock()
					missing[i] = true
					mu.Unlock()
					return nil
				}
				if err != nil {
					return fmt.Errorf("read manifest %s in %s: %w", it.target, it.repo, err)
				}
				bodies[i] = b
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		for i, it := range batch {
			if missing[i] {
				m.missing = append(m.missing, it.repo+"@"+it.target.String())
				continue
			}
			refs, err := References(bodies[i])
			if err != nil {
				return nil, fmt.Errorf("manifest %s in %s: %w", it.target, it.repo, err)
			}
			r := repos[it.repo]
			for _, b := range refs.Blobs {
				m.blobs[r.blobTarget(b)] = struct{}{}
			}
			for _, c := range refs.Manifests {
				if t, ok := r.manifestTarget(c); ok {
					push(it.repo, t)
				} else {
					m.blobs[c] = struct{}{} // a child stored in another repository
				}
			}
			if refs.Subject != "" {
				if t, ok := r.manifestTarget(refs.Subject); ok {
					push(it.repo, t)
				}
			}
		}
	}
	return m, nil
}
