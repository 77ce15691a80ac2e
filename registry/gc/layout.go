package gc

import (
	"path"
	"strings"

	"github.com/opencontainers/go-digest"
)

// What the collector reads and deletes is distribution's storage layout
// (registry/storage/paths.go of distribution v3):
//
//	/docker/registry/v2/
//	├── blobs/<algorithm>/<first two hex>/<hex>/data   content, stored once
//	└── repositories/<name>/
//	    ├── _layers/<algorithm>/<hex>/link              the repository has this blob
//	    ├── _manifests/revisions/<algorithm>/<hex>/link the repository has this manifest
//	    ├── _manifests/tags/<tag>/current/link          the tag's manifest
//	    ├── _manifests/tags/<tag>/index/<alg>/<hex>/link manifests the tag has named
//	    └── _uploads/<id>/{data,startedat,hashstates/…} an upload in progress
//
// and the referrer records of package referrers under /hermes/v1.
const (
	v2Root    = "/docker/registry/v2"
	blobsRoot = v2Root + "/blobs"
	reposRoot = v2Root + "/repositories"
)

func blobDir(d digest.Digest) string {
	hex := d.Encoded()
	return path.Join(blobsRoot, d.Algorithm().String(), hex[:2], hex)
}

func blobDataPath(d digest.Digest) string { return path.Join(blobDir(d), "data") }

func revisionDir(repo string, d digest.Digest) string {
	return path.Join(reposRoot, repo, "_manifests", "revisions", d.Algorithm().String(), d.Encoded())
}

func tagIndexDir(repo, tag string, d digest.Digest) string {
	return path.Join(reposRoot, repo, "_manifests", "tags", tag, "index", d.Algorithm().String(), d.Encoded())
}

func layerLinkDir(repo string, d digest.Digest) string {
	return path.Join(reposRoot, repo, "_layers", d.Algorithm().String(), d.Encoded())
}

func uploadDir(repo, id string) string { return path.Join(reposRoot, repo, "_uploads", id) }

// repoPath is a file below reposRoot, split into its repository and the
// components after it (the first starting with "_", which no repository
// name component can).
type repoPath struct {
	repo string
	rest []string
}

func parseRepoPath(p string) (repoPath, bool) {
	rel, ok := strings.CutPrefix(p, reposRoot+"/")
	if !ok {
		return repoPath{}, false
	}
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		if strings.HasPrefix(c, "_") {
			if i == 0 {
				return repoPath{}, false
			}
			return repoPath{repo: strings.Join(parts[:i], "/"), rest: parts[i:]}, true
		}
	}
	return repoPath{}, false
}

// linkDigest is the digest named by <algorithm>/<hex> path components.
func linkDigest(alg, hex string) (digest.Digest, bool) {
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
	return d, d.Validate() == nil
}

// parseBlobPath returns the digest of a blob data path.
func parseBlobPath(p string) (digest.Digest, bool) {
	rel, ok := strings.CutPrefix(p, blobsRoot+"/")
	if !ok {
		return "", false
	}
	parts := strings.Split(rel, "/")
	if len(parts) != 4 || parts[3] != "data" {
		return "", false
	}
	return linkDigest(parts[0], parts[2])
}
