package registry

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/tests/harness"
)

// TestS3Replicas runs two registries over one S3 bucket, as replicas over
// shared object storage: referrers pushed concurrently to one are all
// listed by the other, and still after both restart.
func TestS3Replicas(t *testing.T) {
	ctx := context.Background()
	conf := harness.StartS3(t)
	opts := harness.HermesRegistryOptions{StorageConfig: conf, ReferrersCacheTTL: 200 * time.Millisecond, HTTPSecret: "shared", Auth: true}
	a := harness.StartHermesRegistry(t, opts)
	b := harness.StartHermesRegistry(t, opts)
	const repo, n = "ghcr.io/org/app", 20
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("s3 subject"), Size: 5}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := pushReferrer(ctx, repository(t, a, repo), subject, fmt.Sprint(i))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	harness.WaitFor(t, b.Process, 10*time.Second, "replica b to list a's referrers", func() error {
		if got := listReferrers(t, b.URL, repo, subject.Digest, ""); len(got) != n {
			return fmt.Errorf("b lists %d of %d", len(got), n)
		}
		return nil
	})
	a.Restart(t, false)
	b.Restart(t, true)
	for _, r := range []*harness.HermesRegistry{a, b} {
		if got := listReferrers(t, r.URL, repo, subject.Digest, ""); len(got) != n {
			t.Fatalf("%s after restart: %d of %d referrers", r.Host, len(got), n)
		}
	}
}
