package referrers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Driver is a Store in a distribution storage driver, beside (never inside)
// distribution's own /docker tree:
//
//	/hermes/v1/repositories/
//	└── <repository>/                     e.g. docker.io/library/nginx
//	    └── _referrers/                   "_" cannot start a repository component
//	        └── <subject algorithm>/
//	            └── <subject hex>/
//	                └── <algorithm>-<hex> one file per referrer: its descriptor as JSON
//
// One object per referrer makes Put and Delete single-object writes, which
// every driver (filesystem, in-memory, S3, GCS, Azure) performs without
// coordination between writers.
type Driver struct {
	driver storagedriver.StorageDriver
}

var _ Store = (*Driver)(nil)

// Root is where Driver keeps its objects in the storage driver.
const Root = "/hermes/v1/repositories"

// NewDriver returns a Store over d.
func NewDriver(d storagedriver.StorageDriver) *Driver { return &Driver{driver: d} }

func subjectDir(repo string, subject digest.Digest) string {
	return path.Join(Root, repo, "_referrers", subject.Algorithm().String(), subject.Encoded())
}

func entryPath(repo string, subject, referrer digest.Digest) string {
	return path.Join(subjectDir(repo, subject), referrer.Algorithm().String()+"-"+referrer.Encoded())
}

func (s *Driver) Put(ctx context.Context, repo string, subject digest.Digest, desc ocispec.Descriptor) error {
	if err := check(repo, subject, desc.Digest); err != nil {
		return err
	}
	b, err := json.Marshal(desc)
	if err != nil {
		return fmt.Errorf("encode referrer %s: %w", desc.Digest, err)
	}
	if err := s.driver.PutContent(ctx, entryPath(repo, subject, desc.Digest), b); err != nil {
		return fmt.Errorf("store referrer %s of %s in %s: %w", desc.Digest, subject, repo, err)
	}
	return nil
}

func (s *Driver) Delete(ctx context.Context, repo string, subject, referrer digest.Digest) error {
	if err := check(repo, subject, referrer); err != nil {
		return err
	}
	err := s.driver.Delete(ctx, entryPath(repo, subject, referrer))
	if err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
		return fmt.Errorf("delete referrer %s of %s in %s: %w", referrer, subject, repo, err)
	}
	return nil
}

func (s *Driver) List(ctx context.Context, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	if err := check(repo, subject); err != nil {
		return nil, err
	}
	out := []ocispec.Descriptor{}
	paths, err := s.driver.List(ctx, subjectDir(repo, subject))
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list referrers of %s in %s: %w", subject, repo, err)
	}
	for _, p := range paths {
		b, err := s.driver.GetContent(ctx, p)
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("read referrer %s: %w", p, err)
		}
		var d ocispec.Descriptor
		if err := json.Unmarshal(b, &d); err != nil || d.Digest.Validate() != nil {
			// A writer is still writing it (the filesystem driver writes in
			// place); its manifest PUT has not been answered yet, so leaving
			// it out is what a reader ordered before that PUT would see.
			continue
		}
		out = append(out, d)
	}
	sortByDigest(out)
	return out, nil
}

// Entry is one stored referrer record, named by its object's path.
type Entry struct {
	Repository string
	Subject    digest.Digest
	Referrer   digest.Digest
}

// ParseEntryPath returns the record an object below Root stands for;
// false for anything else (a directory, a stray object). Garbage
// collection walks Root and reads the records this way.
func ParseEntryPath(p string) (Entry, bool) {
	rest, ok := strings.CutPrefix(p, Root+"/")
	if !ok {
		return Entry{}, false
	}
	i := strings.LastIndex(rest, "/_referrers/")
	if i <= 0 {
		return Entry{}, false
	}
	parts := strings.Split(rest[i+len("/_referrers/"):], "/")
	if len(parts) != 3 {
		return Entry{}, false
	}
	alg, hex, ok := strings.Cut(parts[2], "-")
	if !ok {
		return Entry{}, false
	}
	subject := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[1])
	referrer := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
	if subject.Validate() != nil || referrer.Validate() != nil {
		return Entry{}, false
	}
	return Entry{Repository: rest[:i], Subject: subject, Referrer: referrer}, true
}
