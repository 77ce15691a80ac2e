package referrers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrInvalid is wrapped by errors about arguments a Store refuses: an
// invalid digest or an empty repository.
var ErrInvalid = errors.New("invalid referrer record")

// Store keeps referrer sets. Implementations are safe for concurrent use.
type Store interface {
	// Put records that the manifest described by desc has subject as its
	// subject in repo. Putting the same referrer again replaces it.
	Put(ctx context.Context, repo string, subject digest.Digest, desc ocispec.Descriptor) error
	// Delete forgets referrer of subject in repo. Deleting what is not
	// there is not an error.
	Delete(ctx context.Context, repo string, subject, referrer digest.Digest) error
	// List returns the referrers of subject in repo sorted by digest, empty
	// (not an error) when there are none.
	List(ctx context.Context, repo string, subject digest.Digest) ([]ocispec.Descriptor, error)
}

func check(repo string, dgsts ...digest.Digest) error {
	if repo == "" || strings.Contains(repo, "..") || strings.HasPrefix(repo, "/") || strings.HasSuffix(repo, "/") {
		return fmt.Errorf("%w: repository %q", ErrInvalid, repo)
	}
	for _, d := range dgsts {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%w: digest %q: %w", ErrInvalid, d, err)
		}
	}
	return nil
}

func sortByDigest(descs []ocispec.Descriptor) {
	slices.SortFunc(descs, func(a, b ocispec.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
}

// Memory is a Store in a map, for tests.
type Memory struct {
	mu   sync.Mutex
	sets map[string]map[digest.Digest]ocispec.Descriptor // repo@subject -> referrer -> descriptor
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{sets: map[string]map[digest.Digest]ocispec.Descriptor{}} }

func (m *Memory) Put(_ context.Context, repo string, subject digest.Digest, desc ocispec.Descriptor) error {
	if err := check(repo, subject, desc.Digest); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := repo + "@" + string(subject)
	if m.sets[k] == nil {
		m.sets[k] = map[digest.Digest]ocispec.Descriptor{}
	}
	m.sets[k][desc.Digest] = desc
	return nil
}

func (m *Memory) Delete(_ context.Context, repo string, subject, referrer digest.Digest) error {
	if err := check(repo, subject, referrer); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sets[repo+"@"+string(subject)], referrer)
	return nil
}

func (m *Memory) List(_ context.Context, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	if err := check(repo, subject); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []ocispec.Descriptor{}
	for _, d := range m.sets[repo+"@"+string(subject)] {
		out = append(out, d)
	}
	sortByDigest(out)
	return out, nil
}
