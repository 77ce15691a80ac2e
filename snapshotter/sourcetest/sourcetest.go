// Package sourcetest is the conformance suite every snapshotter.Source
// passes, and Memory, the in-memory Source the suite also runs against so
// that tests using it can trust it behaves like the registry-backed ones.
package sourcetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/hermes-oci/hermes/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Artifact is a SOCI v1 index with its zTOC blobs, as a builder would push
// it. Blobs holds the bytes served for each blob digest; a test may make
// them disagree with the digest to model a corrupted zTOC.
type Artifact struct {
	Subject   ocispec.Descriptor
	Layers    []digest.Digest // the image layers the zTOCs are for
	Index     []byte
	IndexDesc ocispec.Descriptor
	Blobs     map[digest.Digest][]byte
}

// NewArtifact returns an index for subject over n zTOC-sized blobs of random
// bytes (the sources copy zTOCs without parsing them).
func NewArtifact(t testing.TB, subject ocispec.Descriptor, n int) Artifact {
	t.Helper()
	a := Artifact{Subject: subject, Blobs: map[digest.Digest][]byte{}}
	var descs []ocispec.Descriptor
	for i := 0; i < n; i++ {
		b := make([]byte, 1024+i)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		layer := digest.FromString(fmt.Sprint(subject.Digest, "layer", i))
		a.Layers = append(a.Layers, layer)
		d := ocispec.Descriptor{MediaType: soci.SociLayerMediaType, Digest: digest.FromBytes(b), Size: int64(len(b)),
			Annotations: map[string]string{soci.IndexAnnotationImageLayerDigest: layer.String()}}
		descs = append(descs, d)
		a.Blobs[d.Digest] = b
	}
	idx := soci.NewIndex(soci.V1, descs, &subject, nil)
	b, err := soci.MarshalIndex(idx)
	if err != nil {
		t.Fatal(err)
	}
	a.Index = b
	a.IndexDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: soci.SociIndexArtifactTypeV1, Digest: digest.FromBytes(b), Size: int64(len(b))}
	return a
}

// Target is a Source under test and the means to give it indexes.
type Target struct {
	Source snapshotter.Source
	// Store is the local store Source copies into.
	Store store.Store
	// Publish makes a findable for the image named ref whose manifest is
	// a.Subject.
	Publish func(t *testing.T, ref string, a Artifact)
	// Corrupt makes the source serve blob d of the published index for ref
	// with one byte changed (same length, same digest claimed).
	Corrupt func(t *testing.T, ref string, d digest.Digest)
	// Ref returns an image reference the target can publish for; name
	// distinguishes repositories within one test.
	Ref func(name string) string
}

// Run runs the suite; newTarget gives each subtest a fresh, empty target.
func Run(t *testing.T, newTarget func(t *testing.T) Target) {
	ctx := context.Background()
	subject := func(name string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(name), Size: 1234}
	}

	t.Run("NoIndex", func(t *testing.T) {
		tg := newTarget(t)
		_, err := tg.Source.Fetch(ctx, snapshotter.Image{Ref: tg.Ref("app"), Manifest: subject("absent").Digest})
		if !errors.Is(err, snapshotter.ErrNoIndex) {
			t.Fatalf("Fetch of an unindexed image: got %v, want ErrNoIndex", err)
		}
	})

	t.Run("Found", func(t *testing.T) {
		tg := newTarget(t)
		a := NewArtifact(t, subject("img1"), 3)
		ref := tg.Ref("app")
		tg.Publish(t, ref, a)
		for i := 0; i < 2; i++ { // the second Fetch finds everything local
			got, err := tg.Source.Fetch(ctx, snapshotter.Image{Ref: ref, Manifest: a.Subject.Digest})
			if err != nil {
				t.Fatalf("Fetch #%d: %v", i+1, err)
			}
			if got.Digest != a.IndexDesc.Digest {
				t.Fatalf("Fetch #%d: index %s, want %s", i+1, got.Digest, a.IndexDesc.Digest)
			}
			if len(got.Layers) != len(a.Layers) {
				t.Fatalf("Fetch #%d: %d indexed layers, want %d", i+1, len(got.Layers), len(a.Layers))
			}
			for _, l := range a.Layers {
				if !got.Layers[l] {
					t.Fatalf("Fetch #%d: layer %s not reported as indexed", i+1, l)
				}
			}
		}
		expectStored(t, tg.Store, a.IndexDesc.Digest, a.Index)
		for d, b := range a.Blobs {
			expectStored(t, tg.Store, d, b)
		}
	})

	t.Run("OtherManifestOrRepository", func(t *testing.T) {
		tg := newTarget(t)
		a := NewArtifact(t, subject("img2"), 1)
		tg.Publish(t, tg.Ref("app"), a)
		if _, err := tg.Source.Fetch(ctx, snapshotter.Image{Ref: tg.Ref("app"), Manifest: subject("img3").Digest}); !errors.Is(err, snapshotter.ErrNoIndex) {
			t.Errorf("Fetch of another manifest in the same repository: got %v, want ErrNoIndex", err)
		}
		if _, err := tg.Source.Fetch(ctx, snapshotter.Image{Ref: tg.Ref("other"), Manifest: a.Subject.Digest}); !errors.Is(err, snapshotter.ErrNoIndex) {
			t.Errorf("Fetch of the same manifest in another repository: got %v, want ErrNoIndex", err)
		}
	})

	t.Run("CorruptZtoc", func(t *testing.T) {
		tg := newTarget(t)
		a := NewArtifact(t, subject("img4"), 2)
		ref := tg.Ref("app")
		tg.Publish(t, ref, a)
		var bad digest.Digest
		for d := range a.Blobs {
			bad = d
			break
		}
		tg.Corrupt(t, ref, bad)
		_, err := tg.Source.Fetch(ctx, snapshotter.Image{Ref: ref, Manifest: a.Subject.Digest})
		if err == nil || errors.Is(err, snapshotter.ErrNoIndex) {
			t.Fatalf("Fetch with a corrupted zTOC: got %v, want a failure other than ErrNoIndex", err)
		}
		if ok, _ := tg.Store.Exists(ctx, ocispec.Descriptor{Digest: bad, Size: int64(len(a.Blobs[bad]))}); ok {
			t.Errorf("corrupted zTOC %s was stored", bad)
		}
	})
}

func expectStored(t *testing.T, st store.Store, d digest.Digest, want []byte) {
	t.Helper()
	rc, err := st.Fetch(context.Background(), ocispec.Descriptor{Digest: d, Size: int64(len(want))})
	if err != nil {
		t.Fatalf("local store lacks %s: %v", d, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("local store holds %d other bytes for %s", len(got), d)
	}
}
