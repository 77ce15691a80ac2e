package sourcetest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Memory is an in-memory snapshotter.Source keyed, like the cache registry,
// by the image's repository and manifest digest. Tests can inject an error,
// hold Fetch until released, and count calls.
type Memory struct {
	SourceName string
	Store      store.Store

	// Calls counts Fetch calls.
	Calls atomic.Int32

	mu      sync.Mutex
	indexes map[string]Artifact
	err     error
	gate    chan struct{}
}

var _ snapshotter.Source = (*Memory)(nil)

// NewMemory returns an empty Memory source named name that copies into st.
func NewMemory(name string, st store.Store) *Memory {
	return &Memory{SourceName: name, Store: st, indexes: map[string]Artifact{}}
}

// Name implements snapshotter.Source.
func (m *Memory) Name() string { return m.SourceName }

// Publish makes a findable for the image named ref.
func (m *Memory) Publish(ref string, a Artifact) error {
	k, err := key(ref, a.Subject.Digest)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.indexes[k] = a
	return nil
}

// Corrupt makes Fetch serve blob d of every published index with its first
// byte changed.
func (m *Memory) Corrupt(d digest.Digest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, a := range m.indexes {
		if b, ok := a.Blobs[d]; ok {
			blobs := map[digest.Digest][]byte{}
			for bd, bb := range a.Blobs {
				blobs[bd] = bb
			}
			b = bytes.Clone(b)
			b[0] ^= 0xff
			blobs[d] = b
			a.Blobs = blobs
			m.indexes[k] = a
		}
	}
}

// FailWith makes every Fetch fail with err (nil: stop failing).
func (m *Memory) FailWith(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

// Hold makes Fetch wait until the returned func is called.
func (m *Memory) Hold() (release func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := make(chan struct{})
	m.gate = g
	var once sync.Once
	return func() { once.Do(func() { close(g) }) }
}

// Fetch implements snapshotter.Source.
func (m *Memory) Fetch(ctx context.Context, img snapshotter.Image) (snapshotter.Index, error) {
	m.Calls.Add(1)
	k, err := key(img.Ref, img.Manifest)
	if err != nil {
		return snapshotter.Index{}, err
	}
	m.mu.Lock()
	gate, ferr := m.gate, m.err
	a, ok := m.indexes[k]
	m.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return snapshotter.Index{}, ctx.Err()
		}
	}
	if ferr != nil {
		return snapshotter.Index{}, ferr
	}
	if !ok {
		return snapshotter.Index{}, fmt.Errorf("%w for %s", snapshotter.ErrNoIndex, img)
	}
	var idx soci.Index
	if err := soci.UnmarshalIndex(a.Index, &idx); err != nil {
		return snapshotter.Index{}, err
	}
	// The index first, then its zTOCs, as soci's fetcher does; the store
	// verifies each digest.
	if err := push(ctx, m.Store, a.IndexDesc, a.Index); err != nil {
		return snapshotter.Index{}, err
	}
	for _, d := range idx.Blobs {
		if err := push(ctx, m.Store, d, a.Blobs[d.Digest]); err != nil {
			return snapshotter.Index{}, fmt.Errorf("zTOC %s: %w", d.Digest, err)
		}
	}
	return snapshotter.Index{Digest: a.IndexDesc.Digest, Layers: snapshotter.IndexedLayers(&idx)}, nil
}

func push(ctx context.Context, st store.Store, d ocispec.Descriptor, b []byte) error {
	desc := ocispec.Descriptor{Digest: d.Digest, Size: d.Size}
	if ok, err := st.Exists(ctx, desc); err == nil && ok {
		return nil
	}
	if err := st.Push(ctx, desc, bytes.NewReader(b)); err != nil && !store.IsErrAlreadyExists(err) {
		return err
	}
	return nil
}

func key(ref string, manifest digest.Digest) (string, error) {
	repo, err := artifacts.Repository(ref)
	if err != nil {
		return "", err
	}
	return repo + "@" + manifest.String(), nil
}
