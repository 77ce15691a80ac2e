package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/felixge/httpsnoop"
	"github.com/opencontainers/go-digest"
)

// Content addressed by digests other than sha256 (sha512, which the OCI
// specs allow and the conformance suite pushes).
//
// distribution v3.1.2 stores every blob and manifest under its sha256 digest
// and half supports other algorithms: an upload verified against a sha512
// digest is linked under both digests, but every answer names the sha256
// one; a cross-repository mount of a sha512 blob writes a link that points
// at itself; a manifest PUT by sha512 digest is refused. Hermes fills the gaps
// around distribution, not inside it:
//
//   - responses about content requested by a sha512 digest carry that digest
//     (Docker-Content-Digest, Location);
//   - a manifest PUT by sha512 digest is verified here, stored by
//     distribution under its sha256 digest, and given a sha512 revision link;
//   - a mounted sha512 blob gets the links an upload would have written
//     (sha512 and sha256, both to the sha256 content), found in the source
//     repository.
//
// Links are distribution's own layout (registry/storage/paths.go):
//
//	/docker/registry/v2/repositories/<name>/
//	├── _layers/<algorithm>/<hex>/link                  blob link: "sha256:<hex>"
//	└── _manifests/revisions/<algorithm>/<hex>/link     manifest revision link
const distributionRepositories = "/docker/registry/v2/repositories"

// maxManifestSize is distribution's limit on a manifest PUT body.
const maxManifestSize = 4 << 20

// isAlias reports whether d is a valid digest distribution does not store
// content under.
func isAlias(d digest.Digest) bool {
	return d.Validate() == nil && d.Algorithm() != digest.Canonical
}

func blobLinkPath(repo string, d digest.Digest) string {
	return path.Join(distributionRepositories, repo, "_layers", d.Algorithm().String(), d.Encoded(), "link")
}

func manifestLinkPath(repo string, d digest.Digest) string {
	return path.Join(distributionRepositories, repo, "_manifests", "revisions", d.Algorithm().String(), d.Encoded(), "link")
}

// prepareAliasManifestPut verifies the body of a manifest PUT by a non-sha256
// digest and points the request at the body's sha256 digest, which
// distribution accepts.
func prepareAliasManifestPut(req *http.Request, repo string, alias digest.Digest) error {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxManifestSize+1))
	if err != nil {
		return errcode.ErrorCodeManifestInvalid.WithDetail(err.Error())
	}
	if len(body) > maxManifestSize {
		return errcode.ErrorCodeManifestInvalid.WithDetail(fmt.Sprintf("manifest larger than %d bytes", maxManifestSize))
	}
	if alias.Algorithm().FromBytes(body) != alias {
		return errcode.ErrorCodeDigestInvalid.WithDetail("manifest content does not match " + alias.String())
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.URL.Path = "/v2/" + repo + "/manifests/" + digest.FromBytes(body).String()
	req.URL.RawPath = ""
	return nil
}

// aliasHeaders makes a successful answer about content requested as alias
// name alias.
func aliasHeaders(w http.ResponseWriter, alias digest.Digest) http.ResponseWriter {
	return httpsnoop.Wrap(w, httpsnoop.Hooks{WriteHeader: func(next httpsnoop.WriteHeaderFunc) httpsnoop.WriteHeaderFunc {
		return func(code int) {
			if code >= 200 && code < 300 {
				h := w.Header()
				if h.Get("Docker-Content-Digest") != "" {
					h.Set("Docker-Content-Digest", alias.String())
				}
				if loc := h.Get("Location"); loc != "" {
					if i := strings.LastIndexByte(loc, '/'); i >= 0 && strings.HasPrefix(loc[i+1:], string(digest.Canonical)+":") {
						h.Set("Location", loc[:i+1]+alias.String())
					}
				}
			}
			next(code)
		}
	}})
}

// linkAlias writes the link that makes alias name target's content.
func linkAlias(ctx context.Context, d storagedriver.StorageDriver, linkPath string, target digest.Digest) error {
	if err := d.PutContent(ctx, linkPath, []byte(target.String())); err != nil {
		return fmt.Errorf("link %s: %w", linkPath, err)
	}
	return nil
}

// blobs repairs what distribution's mount writes for non-sha256 digests.
type blobs struct {
	distribution.BlobStore
	repo   string
	driver storagedriver.StorageDriver
}

func (b *blobs) Create(ctx context.Context, options ...distribution.BlobCreateOption) (distribution.BlobWriter, error) {
	w, err := b.BlobStore.Create(ctx, options...)
	var mounted distribution.ErrBlobMounted
	if errors.As(err, &mounted) && isAlias(mounted.Descriptor.Digest) && mounted.From != nil {
		alias := mounted.Descriptor.Digest
		target, rerr := b.driver.GetContent(ctx, blobLinkPath(mounted.From.Name(), alias))
		if rerr != nil {
			return nil, fmt.Errorf("mount %s from %s: %w", alias, mounted.From.Name(), rerr)
		}
		canonical, perr := digest.Parse(string(target))
		if perr != nil {
			return nil, fmt.Errorf("mount %s from %s: bad link: %w", alias, mounted.From.Name(), perr)
		}
		// Both links, as an upload writes them: blob reads resolve the alias
		// to the sha256 digest and then look that up in the repository.
		for _, l := range []digest.Digest{alias, canonical} {
			if lerr := linkAlias(ctx, b.driver, blobLinkPath(b.repo, l), canonical); lerr != nil {
				return nil, lerr
			}
		}
	}
	// distribution's handler recognizes a mount by this exact error value.
	return w, err
}
