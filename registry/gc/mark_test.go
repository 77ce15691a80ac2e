package gc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestReferences(t *testing.T) {
	a, b, c, s := digest.FromString("a"), digest.FromString("b"), digest.FromString("c"), digest.FromString("s")
	for name, tc := range map[string]struct {
		body    string
		blobs   int
		mans    int
		subject digest.Digest
		err     bool
	}{
		"image":    {body: fmt.Sprintf(`{"config":{"digest":%q},"layers":[{"digest":%q},{"digest":%q}],"subject":{"digest":%q}}`, a, b, c, s), blobs: 3, subject: s},
		"index":    {body: fmt.Sprintf(`{"manifests":[{"digest":%q},{"digest":%q}]}`, a, b), mans: 2},
		"artifact": {body: fmt.Sprintf(`{"blobs":[{"digest":%q}]}`, a), blobs: 1},
		"schema1":  {body: fmt.Sprintf(`{"fsLayers":[{"blobSum":%q}]}`, a), blobs: 1},
		"garbage":  {body: `{"layers":`, err: true},
		"bad":      {body: `{"layers":[{"digest":"sha256:zz"}]}`, err: true},
	} {
		r, err := References([]byte(tc.body))
		if tc.err {
			if !errors.Is(err, ErrUnreadable) {
				t.Errorf("%s: err %v, want ErrUnreadable", name, err)
			}
			continue
		}
		if err != nil || len(r.Blobs) != tc.blobs || len(r.Manifests) != tc.mans || r.Subject != tc.subject {
			t.Errorf("%s: %+v, %v", name, r, err)
		}
	}
}

// store is a repository set and manifest bodies for mark.
type store struct {
	repos  map[string]*repoState
	bodies map[digest.Digest][]byte
}

func (s *store) read(_ context.Context, d digest.Digest) ([]byte, error) {
	b, ok := s.bodies[d]
	if !ok {
		return nil, errMissing
	}
	return b, nil
}

func (s *store) manifest(repo, body string, mod time.Time) digest.Digest {
	d := digest.FromString(body)
	s.bodies[d] = []byte(body)
	r := s.repos[repo]
	if r == nil {
		r = newRepoState()
		s.repos[repo] = r
	}
	r.revisions[d] = link{target: d, mod: mod}
	return d
}

func TestMark(t *testing.T) {
	old, now := time.Unix(1000, 0), time.Unix(5000, 0)
	cutoff := now.Add(-time.Hour)
	st := &store{repos: map[string]*repoState{}, bodies: map[digest.Digest][]byte{}}
	blob := func(s string) digest.Digest { return digest.FromString("blob " + s) }
	const repo, other, catalog = "127.0.0.1_5000/app", "127.0.0.1_5000/other", "hermes/ztocs"

	// A mirrored multi-platform image: tagged index, its platform manifest.
	platform := st.manifest(repo, fmt.Sprintf(`{"config":{"digest":%q},"layers":[{"digest":%q}]}`, blob("cfg"), blob("layer")), old)
	top := st.manifest(repo, fmt.Sprintf(`{"manifests":[{"digest":%q}]}`, platform), old)
	st.repos[repo].tags["v1"] = top
	// A live SOCI index of the platform manifest, and a deleted one's
	// leftovers: its manifest is gone, its zTOC blob stays unreferenced.
	soci := st.manifest(repo, fmt.Sprintf(`{"config":{"digest":%q},"layers":[{"digest":%q},{"digest":%q}],"subject":{"digest":%q}}`,
		blob("empty"), blob("ztoc1"), blob("shared"), platform), old)
	st.repos[repo].referrers[soci] = []record{{subject: platform, mod: old}}
	// An untagged manifest that is the subject of nothing live, an old
	// image manifest whose only index was deleted, and a young orphan.
	orphan := st.manifest(repo, fmt.Sprintf(`{"layers":[{"digest":%q}]}`, blob("orphan")), old)
	young := st.manifest(repo, fmt.Sprintf(`{"layers":[{"digest":%q}]}`, blob("young")), now)
	// Another repository's index shares a blob.
	o := st.manifest(other, fmt.Sprintf(`{"layers":[{"digest":%q}],"subject":{"digest":%q}}`, blob("shared"), digest.FromString("upstream")), old)
	st.repos[other].referrers[o] = []record{{subject: digest.FromString("upstream"), mod: old}}
	// A catalog record keeps its zTOC.
	rec := st.manifest(catalog, fmt.Sprintf(`{"layers":[{"digest":%q}],"subject":{"digest":%q}}`, blob("ztoc2"), blob("layer")), old)
	st.repos[catalog].referrers[rec] = []record{{subject: blob("layer"), mod: old}}

	m, err := mark(context.Background(), st.repos, cutoff, st.read, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{top, platform, soci, young} {
		if _, ok := m.manifests[repo][d]; !ok {
			t.Errorf("manifest %s not live", d)
		}
	}
	if _, ok := m.manifests[repo][orphan]; ok {
		t.Errorf("orphan manifest live")
	}
	for _, b := range []string{"cfg", "layer", "empty", "ztoc1", "shared", "young", "ztoc2"} {
		if _, ok := m.blobs[blob(b)]; !ok {
			t.Errorf("blob %s not live", b)
		}
	}
	if _, ok := m.blobs[blob("orphan")]; ok {
		t.Errorf("orphan's blob live")
	}
	if _, ok := m.blobs[orphan]; ok {
		t.Errorf("orphan's own content live")
	}

	// A live manifest that cannot be read stops the run; one whose
	// content is gone is reported and does not.
	st.bodies[top] = []byte("{not json")
	if _, err := mark(context.Background(), st.repos, cutoff, st.read, 4); !errors.Is(err, ErrUnreadable) {
		t.Errorf("unreadable live manifest: %v, want ErrUnreadable", err)
	}
	delete(st.bodies, top)
	m, err = mark(context.Background(), st.repos, cutoff, st.read, 4)
	if err != nil || len(m.missing) != 1 {
		t.Errorf("missing content: %v, %v", m, err)
	}
}

func TestInUse(t *testing.T) {
	u := NewInUse()
	d := digest.FromString("x")
	since := time.Now().Add(-time.Minute)
	u.Touch(d)
	if ran, err := u.deleteUnused(d, since, func() error { return nil }); ran || err != nil {
		t.Fatalf("deleted a digest used after since")
	}
	u.forget(time.Now().Add(time.Second))
	if ran, _ := u.deleteUnused(d, since, func() error { return nil }); !ran {
		t.Fatalf("kept a forgotten digest")
	}
	var nilUse *InUse
	nilUse.Touch(d)
	if ran, _ := nilUse.deleteUnused(d, since, func() error { return nil }); !ran {
		t.Fatalf("nil InUse kept a digest")
	}
}

func TestPaths(t *testing.T) {
	d := digest.FromString("p")
	if got, ok := parseBlobPath(blobDataPath(d)); !ok || got != d {
		t.Errorf("parseBlobPath(blobDataPath) = %s, %v", got, ok)
	}
	p, ok := parseRepoPath(revisionDir("docker.io/library/nginx", d) + "/link")
	if !ok || p.repo != "docker.io/library/nginx" || len(p.rest) != 5 {
		t.Errorf("parseRepoPath = %+v, %v", p, ok)
	}
	if _, ok := parseRepoPath(reposRoot + "/_x/y"); ok {
		t.Errorf("a path without repository parsed")
	}
}
