package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/tests/harness"
)

// storageFiles lists the files below root, upload scratch space excluded,
// with their sizes: what "nothing changed" compares.
func storageFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, "/_uploads/") {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %d", strings.TrimPrefix(p, root), info.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestBadInput sends malformed requests with a valid credential: each gets
// an OCI error, the registry keeps running, and storage is unchanged.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{Auth: true})
	const repo = "docker.io/library/app"
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("app"), Size: 1}
	good, err := pushReferrer(ctx, repository(t, reg, repo), subject, "good")
	if err != nil {
		t.Fatal(err)
	}
	before := storageFiles(t, reg.Root)

	manifest := func(subjectDigest string) []byte {
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":"a/b","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":1}}`,
			ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageManifest, subjectDigest))
	}
	huge := bytes.Repeat([]byte(" "), 5<<20)
	for name, c := range map[string]struct {
		method, path string
		body         []byte
		code         string
	}{
		"malformed manifest":          {http.MethodPut, "/v2/" + repo + "/manifests/v2", []byte(`{"schemaVersion":2,"layers":[`), "MANIFEST_INVALID"},
		"not JSON":                    {http.MethodPut, "/v2/" + repo + "/manifests/v2", []byte("\x00\x01garbage"), "MANIFEST_INVALID"},
		"malformed subject digest":    {http.MethodPut, "/v2/" + repo + "/manifests/v2", manifest("sha256:1234"), "MANIFEST_INVALID"},
		"subject digest not a digest": {http.MethodPut, "/v2/" + repo + "/manifests/v2", manifest("../../etc/passwd"), "MANIFEST_INVALID"},
		"manifest over 4 MiB":         {http.MethodPut, "/v2/" + repo + "/manifests/v2", huge, "MANIFEST_INVALID"},
		"sha512 digest mismatch":      {http.MethodPut, "/v2/" + repo + "/manifests/" + digest.SHA512.FromString("x").String(), manifest(subject.Digest.String()), "DIGEST_INVALID"},
		"dot-dot":                     {http.MethodPut, "/v2/docker.io/../../etc/manifests/v2", manifest(subject.Digest.String()), "NAME_INVALID"},
		"dot-dot in ns":               {http.MethodGet, "/v2/library/app/manifests/v2?ns=../x", nil, "NAME_INVALID"},
		"upper case":                  {http.MethodPut, "/v2/docker.io/library/App/manifests/v2", manifest(subject.Digest.String()), "NAME_INVALID"},
		"upper case read":             {http.MethodGet, "/v2/Docker.io/library/app/tags/list", nil, "NAME_INVALID"},
		"huge n":                      {http.MethodGet, "/v2/" + repo + "/tags/list?n=" + strings.Repeat("9", 40), nil, "PAGINATION_NUMBER_INVALID"},
		"huge catalog n":              {http.MethodGet, "/v2/_catalog?n=" + strings.Repeat("9", 40), nil, "PAGINATION_NUMBER_INVALID"},
		"referrers bad digest":        {http.MethodGet, "/v2/" + repo + "/referrers/sha256:abc", nil, "DIGEST_INVALID"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, b, code := call(t, reg, c.method, c.path, ocispec.MediaTypeImageManifest, c.body)
			if resp.StatusCode < 400 || resp.StatusCode >= 500 || code != c.code {
				t.Errorf("%s %s: %s %s, want %s", c.method, c.path, resp.Status, b, c.code)
			}
		})
	}
	t.Run("blob upload wrong digest", func(t *testing.T) { checkWrongDigestUpload(t, reg, repo) })
	// Huge but valid pagination values are served; a "last" that cannot be
	// a tag or a repository is refused.
	for q, want := range map[string]int{
		"/v2/" + repo + "/tags/list?n=2147483647":                      0, // 0: 200, or 404 NAME_UNKNOWN (no tags yet)
		"/v2/" + repo + "/tags/list?n=5&last=zzz":                      0,
		"/v2/" + repo + "/tags/list?last=" + strings.Repeat("z", 8000): http.StatusBadRequest,
		"/v2/" + repo + "/tags/list?last=../../../../../../etc":        http.StatusBadRequest,
		"/v2/_catalog?n=1000&last=" + strings.Repeat("a", 300):         http.StatusBadRequest,
		"/v2/_catalog?last=../..":                                      http.StatusBadRequest,
		"/v2/_catalog?n=1&last=docker.io":                              http.StatusOK,
	} {
		resp, err := http.Get(reg.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want == 0 && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNotFound) {
			continue
		}
		if resp.StatusCode != want || (want >= 400 && !bytes.Contains(b, []byte(`"errors"`))) {
			t.Errorf("GET %.80s: %s %s, want %d", q, resp.Status, b, want)
		}
	}
	if ok, err := reg.Exited(); ok {
		t.Fatalf("hermes-registry exited: %v", err)
	}
	if after := storageFiles(t, reg.Root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("storage changed:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	if got := listReferrers(t, reg.URL, repo, subject.Digest, ""); len(got) != 1 || got[0].Digest != good.Digest {
		t.Errorf("referrers after bad input: %+v", got)
	}
	if strings.Contains(reg.Output(), "panic") {
		t.Errorf("panic in the log")
	}
}

// checkWrongDigestUpload uploads content with a digest that is not its own.
// The spec requires the upload to be refused with DIGEST_INVALID and
// nothing stored under either digest. The session is then gone
// (BLOB_UPLOAD_UNKNOWN) or, if the registry keeps it, still resumable (204
// with the bytes it holds); distribution cancels it.
func checkWrongDigestUpload(t *testing.T, reg *harness.HermesRegistry, repo string) {
	content := []byte("content")
	wrong, right := digest.FromString("other"), digest.FromBytes(content)
	do := func(method, u string, body []byte) (*http.Response, string) {
		t.Helper()
		resp, _, code := call(t, reg, method, u, "application/octet-stream", body)
		return resp, code
	}
	withDigest := func(loc string, d digest.Digest) string {
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		return loc + sep + "digest=" + url.QueryEscape(d.String())
	}

	// A POST with ?digest= either takes the body as the whole blob, and then
	// must refuse it, or opens a session (distribution does) whose PUT must.
	resp, code := do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+url.QueryEscape(wrong.String()), content)
	var session string
	switch resp.StatusCode {
	case http.StatusBadRequest:
		if code != "DIGEST_INVALID" {
			t.Fatalf("monolithic upload with a wrong digest: 400 %s, want DIGEST_INVALID", code)
		}
	case http.StatusAccepted:
		session = resp.Header.Get("Location")
		if session == "" {
			t.Fatal("upload opened without a Location")
		}
		resp, code = do(http.MethodPut, withDigest(session, wrong), content)
		if resp.StatusCode != http.StatusBadRequest || code != "DIGEST_INVALID" {
			t.Fatalf("finishing an upload with a wrong digest: %s %s, want 400 DIGEST_INVALID", resp.Status, code)
		}
	default:
		t.Fatalf("upload with a wrong digest: %s %s, want 400 DIGEST_INVALID or 202", resp.Status, code)
	}
	for _, d := range []digest.Digest{wrong, right} {
		if resp, code := do(http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("blob %s after the refused upload: %s %s, want 404", d, resp.Status, code)
		}
	}
	if session == "" {
		return // no session was opened
	}
	switch resp, code := do(http.MethodGet, session, nil); resp.StatusCode {
	case http.StatusNotFound:
		if code != "BLOB_UPLOAD_UNKNOWN" {
			t.Errorf("upload session after the refusal: 404 %s, want BLOB_UPLOAD_UNKNOWN", code)
		}
	case http.StatusNoContent:
		if r := resp.Header.Get("Range"); r != fmt.Sprintf("0-%d", len(content)-1) {
			t.Errorf("resumable upload session holds Range %q, want the %d bytes sent", r, len(content))
		}
		do(http.MethodDelete, session, nil)
	default:
		t.Errorf("upload session after the refusal: %s %s, want 404 (gone) or 204 (resumable)", resp.Status, code)
	}
}

// TestAuthWithClients checks write auth with the real CLIs: crane with the
// htpasswd user, oras with the token as a password, anonymous reads, and
// reads that need the credential when configured so.
func TestAuthWithClients(t *testing.T) {
	crane, oras := harness.Bin(t, "crane"), harness.Bin(t, "oras")
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{Auth: true})
	dir := t.TempDir()
	env := []string{"HOME=" + dir, "DOCKER_CONFIG=" + filepath.Join(dir, ".docker")}
	layer := filepath.Join(dir, "layer.tar")
	writeTar(t, layer, map[string]string{"a": "a\n"})
	ref := reg.Host + "/ghcr.io/org/app:v1"

	// Anonymous push: refused.
	if out, err := runEnvErr(env, crane, "append", "--insecure", "-f", layer, "-t", ref); err == nil {
		t.Fatalf("anonymous push succeeded: %s", out)
	} else if !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
		t.Fatalf("anonymous push: %v, want 401", err)
	}
	runEnv(t, env, crane, "auth", "login", reg.Host, "-u", reg.Username, "-p", reg.Password)
	runEnv(t, env, crane, "append", "--insecure", "-f", layer, "-t", ref)
	runEnv(t, env, crane, "auth", "logout", reg.Host)
	// Anonymous reads work.
	dgst := strings.TrimSpace(runEnv(t, env, crane, "digest", "--insecure", ref))
	runEnv(t, env, crane, "manifest", "--insecure", ref)
	if tags := runEnv(t, env, crane, "ls", "--insecure", reg.Host+"/ghcr.io/org/app"); strings.TrimSpace(tags) != "v1" {
		t.Fatalf("crane ls = %q", tags)
	}
	// The token works as a password for oras.
	note := filepath.Join(dir, "note.txt")
	if err := os.WriteFile(note, []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runEnv(t, env, oras, "attach", "--plain-http", "--disable-path-validation", "-u", "controller", "-p", reg.Token,
		"--artifact-type", "application/vnd.hermes.test", reg.Host+"/ghcr.io/org/app@"+dgst, note)
	if out := runEnv(t, env, oras, "discover", "--plain-http", "--format", "json", reg.Host+"/ghcr.io/org/app@"+dgst); !strings.Contains(out, "application/vnd.hermes.test") {
		t.Fatalf("oras discover: %s", out)
	}

	// Reads can require the credential.
	private := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{RequireReadAuth: true})
	pref := private.Host + "/ghcr.io/org/app:v1"
	runEnv(t, env, crane, "auth", "login", private.Host, "-u", private.Username, "-p", private.Password)
	runEnv(t, env, crane, "append", "--insecure", "-f", layer, "-t", pref)
	runEnv(t, env, crane, "manifest", "--insecure", pref)
	runEnv(t, env, crane, "auth", "logout", private.Host)
	if out, err := runEnvErr(env, crane, "manifest", "--insecure", pref); err == nil {
		t.Fatalf("anonymous read of a private registry succeeded: %s", out)
	}
}

// TestOpsEndpoints checks health, readiness and the metrics the registry
// promises: requests by route and code, referrers lookups, bytes served.
func TestOpsEndpoints(t *testing.T) {
	ctx := context.Background()
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{})
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(reg.OpsURL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", p, resp.Status)
		}
	}
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("s"), Size: 1}
	desc, err := pushReferrer(ctx, repository(t, reg, "docker.io/library/m"), subject, "m")
	if err != nil {
		t.Fatal(err)
	}
	listReferrers(t, reg.URL, "docker.io/library/m", subject.Digest, "")
	listReferrers(t, reg.URL, "docker.io/library/m", subject.Digest, "")
	req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/docker.io/library/m/manifests/"+desc.Digest.String(), nil)
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	metrics := reg.Metrics(t)
	for _, want := range []string{
		`hermes_registry_http_requests_total{code="201",method="PUT",route="manifest"} 1`,
		`hermes_registry_http_requests_total{code="200",method="GET",route="referrers"} 2`,
		`hermes_registry_http_requests_total{code="200",method="GET",route="manifest"} 1`,
		`hermes_registry_referrers_lookups_total{cache="miss",result="found"} 1`,
		`hermes_registry_referrers_lookups_total{cache="hit",result="found"} 1`,
		`hermes_registry_http_response_bytes_total{route="manifest"} ` + fmt.Sprint(desc.Size),
		`hermes_registry_http_request_duration_seconds_count{route="referrers"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestReplicasShareStorage runs two registries over one storage directory,
// as replicas over shared object storage, with the default referrers cache
// TTL (shared storage is correct by default): a referrer pushed to one is
// listed by the other within the TTL, an upload started on one finishes on
// the other, and a delete shows the same way.
func TestReplicasShareStorage(t *testing.T) {
	ctx := context.Background()
	a := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{HTTPSecret: "shared-secret"})
	b := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{HTTPSecret: "shared-secret", Root: a.Root})
	const repo = "quay.io/org/app"
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("shared"), Size: 1}
	if got := listReferrers(t, b.URL, repo, subject.Digest, ""); len(got) != 0 { // b caches "none"
		t.Fatal(got)
	}
	desc, err := pushReferrer(ctx, repository(t, a, repo), subject, "from a")
	if err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, b.Process, 10*time.Second, "replica b to list a's referrer", func() error {
		if got := listReferrers(t, b.URL, repo, subject.Digest, ""); len(got) != 1 || got[0].Digest != desc.Digest {
			return fmt.Errorf("b lists %v", got)
		}
		return nil
	})

	// An upload started on a and finished on b.
	content := []byte("blob across replicas")
	req, _ := http.NewRequest(http.MethodPost, a.URL+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload on a: %v %v", resp, err)
	}
	resp.Body.Close()
	loc := strings.Replace(resp.Header.Get("Location"), a.Host, b.Host, 1)
	if !strings.HasPrefix(loc, "http") {
		loc = b.URL + loc
	}
	req, _ = http.NewRequest(http.MethodPut, loc+"&digest="+digest.FromBytes(content).String(), bytes.NewReader(content))
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload on b: %v %v", resp, err)
	}
	resp.Body.Close()

	// Delete through b; a stops listing it.
	req, _ = http.NewRequest(http.MethodDelete, b.URL+"/v2/"+repo+"/manifests/"+desc.Digest.String(), nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete on b: %v %v", resp, err)
	}
	resp.Body.Close()
	harness.WaitFor(t, a.Process, 10*time.Second, "replica a to forget the deleted referrer", func() error {
		if got := listReferrers(t, a.URL, repo, subject.Digest, ""); len(got) != 0 {
			return fmt.Errorf("a lists %v", got)
		}
		return nil
	})
}

// TestWriteCredentialRequired starts hermes-registry with no write
// credential: it exits 1 and says what to do. Allowed anonymous writes
// (what StartHermesRegistry does without Auth) are warned about.
func TestWriteCredentialRequired(t *testing.T) {
	dir := harness.TempDir(t, "nocred")
	args := []string{"--addr", fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), "--ops-addr", "",
		"--root", filepath.Join(dir, "storage"), "--log-format", "text"}
	p := harness.Start(t, "hermes-registry", dir, harness.HermesBin(t, "hermes-registry"), args)
	code, exited := p.Wait(20 * time.Second)
	if !exited {
		t.Fatal("hermes-registry without a write credential is still running")
	}
	out := p.Output()
	if code != 1 {
		t.Errorf("exit code %d, want 1; log:\n%s", code, out)
	}
	for _, want := range []string{"no write credential", "--htpasswd", "--token-file", "--allow-anonymous-writes"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{})
	var warned bool
	for _, line := range strings.Split(reg.Output(), "\n") {
		warned = warned || (strings.Contains(line, "level=WARN") && strings.Contains(line, "anonymous writes are allowed"))
	}
	if !warned {
		t.Errorf("no warning line about anonymous writes in the log:\n%s", reg.Output())
	}
}
