package nodedisk

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
)

// CleanReport says what Clean removed.
type CleanReport struct {
	// SpanDirs is how many span cache directories of an earlier process
	// were removed, and SpanBytes what they took.
	SpanDirs  int
	SpanBytes int64
	// MetadataBytes is what the earlier process's file-tree store took.
	MetadataBytes int64
	// Ingest is how many half-written blobs were removed.
	Ingest int
	// Corrupt lists the blobs whose bytes did not match their digest.
	Corrupt []digest.Digest
}

// Clean removes what an earlier process left that no new one may trust or
// reuse. It must run before soci starts on the root, and while no other
// snapshotter uses it.
//
//   - the span cache: soci keeps which spans a layer has in memory, so the
//     files of an earlier process are never read again;
//   - soci's file-tree store (metadata.db, metadata/): rebuilt from the zTOC
//     on every mount, so after a crash it only holds orphaned buckets
//     (upstream soci-snapshotter PR #2049);
//   - half-written blobs of the local store, and every blob whose bytes do
//     not match its name (a write cut short outside the store's rename).
func Clean(l Layout) (CleanReport, error) {
	var r CleanReport
	if ents, err := os.ReadDir(l.SpanCache()); err == nil {
		r.SpanDirs = len(ents)
		r.SpanBytes = l.Size(KindSpans)
	}
	if err := os.RemoveAll(l.SpanCache()); err != nil {
		return r, fmt.Errorf("remove span cache of an earlier run: %w", err)
	}
	r.MetadataBytes = l.Size(KindMetadata)
	for _, p := range []string{l.MetadataDB(), l.MetadataDir()} {
		if err := os.RemoveAll(p); err != nil {
			return r, fmt.Errorf("remove file-tree store of an earlier run: %w", err)
		}
	}
	if ents, err := os.ReadDir(l.Ingest()); err == nil {
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(l.Ingest(), e.Name())); err != nil {
				return r, fmt.Errorf("remove half-written blob: %w", err)
			}
			r.Ingest++
		}
	}
	ents, err := os.ReadDir(l.Blobs())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return r, fmt.Errorf("local store: %w", err)
	}
	for _, e := range ents {
		p := filepath.Join(l.Blobs(), e.Name())
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		ok, err := matches(p, d)
		if err != nil {
			return r, err
		}
		if !ok {
			if err := os.RemoveAll(p); err != nil {
				return r, fmt.Errorf("remove corrupt blob: %w", err)
			}
			r.Corrupt = append(r.Corrupt, d)
		}
	}
	return r, nil
}

// matches reports whether the file at p holds the bytes of d; a name that
// is no digest, or a directory, does not match.
func matches(p string, d digest.Digest) (bool, error) {
	if d.Validate() != nil {
		return false, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return false, fmt.Errorf("verify blob: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false, nil
	}
	v := d.Verifier()
	if _, err := io.Copy(v, f); err != nil {
		return false, fmt.Errorf("verify blob %s: %w", d, err)
	}
	return v.Verified(), nil
}
