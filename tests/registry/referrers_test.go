package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
)

// repository is an oras-go client for repo on reg, with reg's write
// credential when it has one.
func repository(t *testing.T, reg *harness.HermesRegistry, repo string) *remote.Repository {
	t.Helper()
	r, err := remote.NewRepository(reg.Host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	client := &auth.Client{Client: retry.DefaultClient, Cache: auth.NewCache()}
	if reg.Username != "" {
		client.Credential = auth.StaticCredential(reg.Host, auth.Credential{Username: reg.Username, Password: reg.Password})
	}
	r.Client = client
	return r
}

// pushReferrer pushes a SOCI-index-like artifact whose subject is subject.
func pushReferrer(ctx context.Context, r *remote.Repository, subject ocispec.Descriptor, note string) (ocispec.Descriptor, error) {
	return oras.PackManifest(ctx, r, oras.PackManifestVersion1_1, artifacts.SOCIIndexV1, oras.PackManifestOptions{
		Subject:             &subject,
		ManifestAnnotations: map[string]string{"note": note},
	})
}

// listReferrers asks the Referrers API directly (no client fallback).
func listReferrers(t *testing.T, base, repo string, subject digest.Digest, query string) []ocispec.Descriptor {
	t.Helper()
	u := fmt.Sprintf("%s/v2/%s/referrers/%s%s", base, repo, subject, query)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Fatalf("GET %s: %s %s", u, resp.Status, b)
	}
	var ix ocispec.Index
	if err := json.Unmarshal(b, &ix); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return ix.Manifests
}

func tagsOf(t *testing.T, reg *harness.HermesRegistry, repo string) []string {
	t.Helper()
	var tags []string
	if err := repository(t, reg, repo).Tags(context.Background(), "", func(ts []string) error {
		tags = append(tags, ts...)
		return nil
	}); err != nil {
		// A repository without tags is unknown to distribution's tag list.
		var er *errcode.ErrorResponse
		if !errors.As(err, &er) || er.StatusCode != http.StatusNotFound {
			t.Fatal(err)
		}
	}
	return tags
}

// TestConcurrentReferrersSurviveRestart pushes 50 referrers of one subject
// at once with oras-go, for a subject that is not in the cache (it lives
// upstream), and finds all 50 through the Referrers API, after a clean
// restart and after a crash.
func TestConcurrentReferrersSurviveRestart(t *testing.T) {
	ctx := context.Background()
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{Auth: true})
	const repo, n = "docker.io/library/nginx", 50
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("nginx manifest upstream"), Size: 1234}

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		want = map[digest.Digest]bool{}
		errs []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One client each, as 50 builders would have.
			d, err := pushReferrer(ctx, repository(t, reg, repo), subject, fmt.Sprint(i))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			want[d.Digest] = true
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d pushes failed, first: %v", len(errs), n, errs[0])
	}
	check := func(when string) {
		t.Helper()
		got := listReferrers(t, reg.URL, repo, subject.Digest, "?artifactType="+url.QueryEscape(artifacts.SOCIIndexV1))
		if len(got) != n {
			t.Fatalf("%s: %d referrers listed, want %d", when, len(got), n)
		}
		for _, d := range got {
			if !want[d.Digest] || d.ArtifactType != artifacts.SOCIIndexV1 || d.Annotations["note"] == "" {
				t.Fatalf("%s: unexpected referrer %+v", when, d)
			}
		}
		// oras-go agrees, through the API.
		var viaOras int
		r := repository(t, reg, repo)
		if err := r.Referrers(ctx, subject, artifacts.SOCIIndexV1, func(refs []ocispec.Descriptor) error {
			viaOras += len(refs)
			return nil
		}); err != nil || viaOras != n {
			t.Fatalf("%s: oras-go lists %d referrers, %v", when, viaOras, err)
		}
		// The pushes used the API: oras-go adds a sha256-<hex> tag when
		// the registry does not answer OCI-Subject.
		if tags := tagsOf(t, reg, repo); len(tags) != 0 {
			t.Fatalf("%s: tags %v, want none (no referrers tag schema)", when, tags)
		}
	}
	check("after pushes")
	reg.Restart(t, false)
	check("after restart")
	reg.Restart(t, true)
	check("after crash")
}

// TestMirrorRequests reads, the way containerd asks a mirror
// (/v2/<path>/...?ns=<host>), the same artifact that was pushed under the
// cache repository, by digest, and gets plain 404s for what the cache lacks
// and for tags.
func TestMirrorRequests(t *testing.T) {
	ctx := context.Background()
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{})
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("app manifest"), Size: 10}
	r := repository(t, reg, "127.0.0.1_5000/team/app")
	desc, err := pushReferrer(ctx, r, subject, "mirror")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Tag(ctx, desc, "v1"); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, []byte, http.Header) {
		req, _ := http.NewRequest(http.MethodGet, reg.URL+path, nil)
		req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, resp.Header
	}
	code, plain, _ := get("/v2/127.0.0.1_5000/team/app/manifests/v1")
	if code != http.StatusOK || digest.FromBytes(plain) != desc.Digest {
		t.Fatalf("plain path: %d", code)
	}
	for _, path := range []string{
		"/v2/team/app/manifests/" + desc.Digest.String() + "?ns=127.0.0.1:5000",
		"/v2/team/app/manifests/" + desc.Digest.String() + "?ns=127.0.0.1%3A5000",
	} {
		code, b, h := get(path)
		if code != http.StatusOK || string(b) != string(plain) || h.Get("Docker-Content-Digest") != desc.Digest.String() {
			t.Errorf("GET %s: %d, same bytes %v", path, code, string(b) == string(plain))
		}
	}
	if got := listReferrers(t, reg.URL, "team/app", subject.Digest, "?ns=127.0.0.1:5000"); len(got) != 1 || got[0].Digest != desc.Digest {
		t.Errorf("referrers through ns: %+v", got)
	}
	// Missing: 404 with an OCI error body, for manifests, blobs, tags; and
	// a mirror never resolves a tag here, even one the cache holds.
	for _, path := range []string{
		"/v2/team/app/manifests/v1?ns=127.0.0.1:5000",
		"/v2/team/app/manifests/v2?ns=127.0.0.1:5000",
		"/v2/library/nginx/manifests/latest?ns=docker.io",
		"/v2/library/nginx/blobs/" + digest.FromString("nope").String() + "?ns=docker.io",
		"/v2/library/nginx/tags/list?ns=docker.io",
	} {
		code, b, _ := get(path)
		var body struct{ Errors []struct{ Code string } }
		if code != http.StatusNotFound || json.Unmarshal(b, &body) != nil || len(body.Errors) == 0 {
			t.Errorf("GET %s: %d %s, want 404 with an OCI error", path, code, b)
		}
	}
}

// TestManyReferrersPaginated pushes 2,500 referrers of one subject (and a
// few of another type) and counts them all with oras discover, which reads
// the Referrers API page by page through its Link header: a page holds at
// most 1,000 and stays far below the 4 MiB oras-go accepts.
func TestManyReferrersPaginated(t *testing.T) {
	orasBin := harness.Bin(t, "oras")
	ctx := context.Background()
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{Auth: true})
	const repo, n, others = "ghcr.io/org/many", 2500, 20
	r := repository(t, reg, repo)
	// The subject, stored as the builder stores images: without its layers.
	subjectBody := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[]}`,
		ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, digest.FromString("config")))
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(subjectBody), Size: int64(len(subjectBody))}
	if err := r.PushReference(ctx, subject, bytes.NewReader(subjectBody), "v1"); err != nil {
		t.Fatal(err)
	}

	work := make(chan int)
	errs := make(chan error, n+others)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := repository(t, reg, repo)
			for i := range work {
				artifactType := artifacts.SOCIIndexV1
				if i >= n {
					artifactType = "application/vnd.hermes.other"
				}
				_, err := oras.PackManifest(ctx, r, oras.PackManifestVersion1_1, artifactType, oras.PackManifestOptions{
					Subject: &subject, ManifestAnnotations: map[string]string{"note": fmt.Sprint(i)},
				})
				errs <- err
			}
		}()
	}
	for i := range n + others {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// The API pages: the first page is full and links to the next.
	resp, err := http.Get(reg.URL + "/v2/" + repo + "/referrers/" + subject.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	var first ocispec.Index
	err = json.NewDecoder(resp.Body).Decode(&first)
	resp.Body.Close()
	if err != nil || len(first.Manifests) != 1000 || !strings.HasPrefix(resp.Header.Get("Link"), "</v2/"+repo+"/referrers/") ||
		!strings.HasSuffix(resp.Header.Get("Link"), `>; rel="next"`) || resp.ContentLength > 1<<20 {
		t.Fatalf("first page: %d referrers, %d bytes, Link %q, %v", len(first.Manifests), resp.ContentLength, resp.Header.Get("Link"), err)
	}

	dir := t.TempDir()
	env := []string{"HOME=" + dir}
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, n + others},
		{[]string{"--artifact-type", artifacts.SOCIIndexV1}, n},
	} {
		args := append([]string{"discover", "--plain-http", "--format", "json", "--depth", "1"}, c.args...)
		out := runEnv(t, env, orasBin, append(args, reg.Host+"/"+repo+":v1")...)
		var tree struct {
			Digest    string
			Referrers []struct{ Digest, ArtifactType string }
		}
		if err := json.Unmarshal([]byte(out), &tree); err != nil {
			t.Fatalf("oras discover %v: %v", c.args, err)
		}
		seen := map[string]bool{}
		for _, d := range tree.Referrers {
			seen[d.Digest] = true
		}
		if tree.Digest != subject.Digest.String() || len(tree.Referrers) != c.want || len(seen) != c.want {
			t.Errorf("oras discover %v: %d referrers (%d distinct) of %s, want %d", c.args, len(tree.Referrers), len(seen), tree.Digest, c.want)
		}
	}
}
