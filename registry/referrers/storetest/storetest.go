// Package storetest is the conformance suite for referrers.Store
// implementations: every Store, fake or real, must pass Run.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/registry/referrers"
)

// Run checks the Store contract on stores made by newStore. Each subtest
// gets a fresh store.
func Run(t *testing.T, newStore func(t *testing.T) referrers.Store) {
	ctx := context.Background()
	subject := digest.FromString("subject")
	desc := func(i int, artifactType string) ocispec.Descriptor {
		return ocispec.Descriptor{
			MediaType:    ocispec.MediaTypeImageManifest,
			Digest:       digest.FromString(fmt.Sprint("referrer", i)),
			Size:         int64(100 + i),
			ArtifactType: artifactType,
			Annotations:  map[string]string{"i": fmt.Sprint(i)},
		}
	}

	t.Run("EmptyIsNotAnError", func(t *testing.T) {
		s := newStore(t)
		got, err := s.List(ctx, "docker.io/library/nginx", subject)
		if err != nil || got == nil || len(got) != 0 {
			t.Fatalf("List on nothing = %v, %v; want an empty, non-nil list", got, err)
		}
	})

	t.Run("PutListDelete", func(t *testing.T) {
		s := newStore(t)
		const repo = "docker.io/library/nginx"
		a, b := desc(1, "application/vnd.amazon.soci.index.v1+json"), desc(2, "application/example")
		for _, d := range []ocispec.Descriptor{a, b, a} { // a twice: idempotent
			if err := s.Put(ctx, repo, subject, d); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.List(ctx, repo, subject)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 {
			t.Fatalf("List = %d descriptors, want 2: %v", len(got), got)
		}
		if got[0].Digest > got[1].Digest {
			t.Errorf("List not sorted by digest: %v", got)
		}
		for _, g := range got {
			want := a
			if g.Digest == b.Digest {
				want = b
			}
			if g.MediaType != want.MediaType || g.Size != want.Size || g.ArtifactType != want.ArtifactType || g.Annotations["i"] != want.Annotations["i"] {
				t.Errorf("List returned %+v, want %+v", g, want)
			}
		}
		// Other subjects and repositories are separate sets.
		if got, _ := s.List(ctx, repo, digest.FromString("other")); len(got) != 0 {
			t.Errorf("other subject has %v", got)
		}
		if got, _ := s.List(ctx, "ghcr.io/library/nginx", subject); len(got) != 0 {
			t.Errorf("other repository has %v", got)
		}
		if err := s.Delete(ctx, repo, subject, a.Digest); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, repo, subject, a.Digest); err != nil {
			t.Fatalf("second Delete: %v, want nil", err)
		}
		got, _ = s.List(ctx, repo, subject)
		if len(got) != 1 || got[0].Digest != b.Digest {
			t.Fatalf("after Delete: %v, want only %s", got, b.Digest)
		}
	})

	t.Run("ConcurrentPutsLoseNothing", func(t *testing.T) {
		s := newStore(t)
		const repo, n = "ghcr.io/org/app", 50
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Put(ctx, repo, subject, desc(i, "t"))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.List(ctx, repo, subject)
		if err != nil || len(got) != n {
			t.Fatalf("List after %d concurrent puts = %d, %v", n, len(got), err)
		}
	})

	t.Run("RejectsInvalid", func(t *testing.T) {
		s := newStore(t)
		bad := []struct {
			repo    string
			subject digest.Digest
			ref     digest.Digest
		}{
			{"", subject, desc(1, "").Digest},
			{"../x", subject, desc(1, "").Digest},
			{"a", "sha256:nothex", desc(1, "").Digest},
			{"a", "", desc(1, "").Digest},
			{"a", subject, "md5:abc"},
			{"a", "sha256:" + digest.Digest("../../../../etc"), desc(1, "").Digest},
		}
		for _, b := range bad {
			d := desc(1, "")
			d.Digest = b.ref
			if err := s.Put(ctx, b.repo, b.subject, d); !errors.Is(err, referrers.ErrInvalid) {
				t.Errorf("Put(%q, %q, %q) = %v, want ErrInvalid", b.repo, b.subject, b.ref, err)
			}
			if err := s.Delete(ctx, b.repo, b.subject, b.ref); !errors.Is(err, referrers.ErrInvalid) {
				t.Errorf("Delete(%q, %q, %q) = %v, want ErrInvalid", b.repo, b.subject, b.ref, err)
			}
		}
		if _, err := s.List(ctx, "a", "sha256:zz"); !errors.Is(err, referrers.ErrInvalid) {
			t.Errorf("List with a bad subject = %v, want ErrInvalid", err)
		}
	})
}
