package registry

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
)

// TestOrasAttachDiscover pushes an image with crane, attaches an artifact
// with oras, and finds it with oras discover through the Referrers API:
// no sha256-<hex> fallback tag may appear.
func TestOrasAttachDiscover(t *testing.T) {
	crane, oras := harness.Bin(t, "crane"), harness.Bin(t, "oras")
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{Auth: true})
	dir := t.TempDir()
	home := filepath.Join(dir, "home") // oras and crane keep logins here
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker")}
	run := func(bin string, args ...string) string {
		t.Helper()
		return runEnv(t, env, bin, args...)
	}
	run(crane, "auth", "login", reg.Host, "-u", reg.Username, "-p", reg.Password)

	ref := reg.Host + "/docker.io/library/app:1"
	layer := filepath.Join(dir, "layer.tar")
	writeTar(t, layer, map[string]string{"hello.txt": "hello\n"})
	run(crane, "append", "--insecure", "-f", layer, "-t", ref)
	dgst := strings.TrimSpace(run(crane, "digest", "--insecure", ref))
	if !strings.HasPrefix(dgst, "sha256:") {
		t.Fatalf("crane digest = %q", dgst)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(run(crane, "manifest", "--insecure", ref)), &m); err != nil {
		t.Fatalf("crane manifest: %v", err)
	}

	note := filepath.Join(dir, "note.txt")
	if err := os.WriteFile(note, []byte("an artifact about app:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const artifactType = "application/vnd.hermes.test+json"
	out := run(oras, "attach", "--plain-http", "--disable-path-validation", "--artifact-type", artifactType, "--format", "json", ref, note+":text/plain")
	var attached struct {
		Digest string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(out), &attached); err != nil || attached.Digest == "" {
		t.Fatalf("oras attach output %q: %v", out, err)
	}

	out = run(oras, "discover", "--plain-http", "--format", "json", "--artifact-type", artifactType, reg.Host+"/docker.io/library/app@"+dgst)
	if !strings.Contains(out, attached.Digest) {
		t.Fatalf("oras discover does not list %s:\n%s", attached.Digest, out)
	}
	tags := strings.Fields(run(crane, "ls", "--insecure", reg.Host+"/docker.io/library/app"))
	if len(tags) != 1 || tags[0] != "1" {
		t.Fatalf("crane ls = %v, want only [1] (no referrers fallback tag)", tags)
	}
	// The lookup went through the Referrers API.
	if !strings.Contains(reg.Metrics(t), `hermes_registry_http_requests_total{code="200",method="GET",route="referrers"}`) {
		t.Errorf("no referrers API request in the metrics")
	}
}

// TestInspectMirroredImage stores an image the way the builder does, its
// image manifest and the index of its platforms without their layers,
// config or the other platform's manifest, plus a SOCI-index-like referrer,
// and inspects the cache with the CLIs users have: oras discover by digest
// and by tag lists the referrer, crane reads the index and the manifest,
// and whatever the cache lacks is a plain 404. Mirrors never resolve the
// tag; anonymous writers cannot store such an image.
func TestInspectMirroredImage(t *testing.T) {
	crane, oras := harness.Bin(t, "crane"), harness.Bin(t, "oras")
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{Auth: true})
	dir := t.TempDir()
	env := []string{"HOME=" + dir, "DOCKER_CONFIG=" + filepath.Join(dir, ".docker")} // no stored logins
	login := []string{"--plain-http", "-u", reg.Username, "-p", reg.Password}
	const repo = "ghcr.io/org/app"
	ref := reg.Host + "/" + repo

	desc := func(mediaType, s string, size int64) map[string]any {
		return map[string]any{"mediaType": mediaType, "digest": digest.FromString(s).String(), "size": size}
	}
	manifest := func(arch string) []byte {
		b, _ := json.Marshal(map[string]any{
			"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest,
			"config": desc(ocispec.MediaTypeImageConfig, "config "+arch, 300),
			"layers": []any{desc(ocispec.MediaTypeImageLayerGzip, "layer "+arch, 4000)},
		})
		return b
	}
	amd, arm := manifest("amd64"), manifest("arm64") // arm is never stored
	platform := func(b []byte, arch string) map[string]any {
		return map[string]any{"mediaType": ocispec.MediaTypeImageManifest, "digest": digest.FromBytes(b).String(), "size": len(b),
			"platform": map[string]string{"os": "linux", "architecture": arch}}
	}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageIndex,
		"manifests": []any{platform(amd, "amd64"), platform(arm, "arm64")}})
	amdDigest, indexDigest := digest.FromBytes(amd), digest.FromBytes(index)
	files := map[string][]byte{"amd.json": amd, "index.json": index, "ztoc": []byte("a zTOC")}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Anonymous: refused (no credential stored, none given), nothing stored.
	if out, err := runEnvErr(env, oras, "manifest", "push", "--plain-http", "--media-type", ocispec.MediaTypeImageManifest, ref+":v1-amd64", filepath.Join(dir, "amd.json")); err == nil {
		t.Fatalf("anonymous manifest push succeeded: %s", out)
	} else if !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "credential not found") { // oras' words for a 401
		t.Fatalf("anonymous manifest push: %v, want 401", err)
	}
	if code, _ := httpGet(t, reg.URL+"/v2/"+repo+"/manifests/"+amdDigest.String()); code != http.StatusNotFound {
		t.Fatalf("a refused anonymous push stored the manifest: %d", code)
	}

	// The builder's writes: the manifest by tag and digest, the index by
	// digest and tag, the referrer with its blob.
	runEnv(t, env, oras, append([]string{"manifest", "push", "--media-type", ocispec.MediaTypeImageManifest, ref + ":v1-amd64", filepath.Join(dir, "amd.json")}, login...)...)
	runEnv(t, env, oras, append([]string{"manifest", "push", "--media-type", ocispec.MediaTypeImageIndex, ref + ":v1", filepath.Join(dir, "index.json")}, login...)...)
	out := runEnv(t, env, oras, append([]string{"attach", "--disable-path-validation", "--format", "json", "--artifact-type", artifacts.SOCIIndexV1,
		ref + "@" + amdDigest.String(), filepath.Join(dir, "ztoc") + ":application/octet-stream"}, login...)...)
	var attached struct{ Digest string }
	if err := json.Unmarshal([]byte(out), &attached); err != nil || attached.Digest == "" {
		t.Fatalf("oras attach: %q %v", out, err)
	}

	// oras discover resolves the subject in the cache, by digest and by tag.
	for _, subject := range []string{ref + "@" + amdDigest.String(), ref + ":v1-amd64"} {
		out := runEnv(t, env, oras, "discover", "--plain-http", "--format", "json", subject)
		var tree struct {
			Digest    string
			Referrers []struct{ Digest, ArtifactType string }
		}
		if err := json.Unmarshal([]byte(out), &tree); err != nil {
			t.Fatalf("oras discover %s: %v: %s", subject, err, out)
		}
		if tree.Digest != amdDigest.String() || len(tree.Referrers) != 1 || tree.Referrers[0].Digest != attached.Digest ||
			tree.Referrers[0].ArtifactType != artifacts.SOCIIndexV1 {
			t.Errorf("oras discover %s = %s, want the one referrer %s", subject, out, attached.Digest)
		}
	}
	// crane reads what is stored, and gets a 404 for what is not.
	if got := runEnv(t, env, crane, "manifest", "--insecure", ref+":v1"); got != string(index) {
		t.Errorf("crane manifest :v1 = %s, want the index", got)
	}
	if got := runEnv(t, env, crane, "manifest", "--insecure", ref+"@"+amdDigest.String()); got != string(amd) {
		t.Errorf("crane manifest @amd64 = %s, want the manifest", got)
	}
	if got := strings.TrimSpace(runEnv(t, env, crane, "digest", "--insecure", ref+":v1")); got != indexDigest.String() {
		t.Errorf("crane digest :v1 = %s, want %s", got, indexDigest)
	}
	if out, err := runEnvErr(env, crane, "blob", "--insecure", ref+"@"+digest.FromString("layer amd64").String()); err == nil {
		t.Errorf("crane blob of a layer the cache lacks succeeded: %q", out)
	} else if !strings.Contains(err.Error(), "404") && !strings.Contains(err.Error(), "BLOB_UNKNOWN") {
		t.Errorf("crane blob of a missing layer: %v, want 404", err)
	}
	if tags := strings.Fields(runEnv(t, env, crane, "ls", "--insecure", ref)); strings.Join(tags, ",") != "v1,v1-amd64" {
		t.Errorf("crane ls = %v, want [v1 v1-amd64] (no referrers fallback tag)", tags)
	}

	// As a mirror (containerd's ?ns=): by digest served, by tag never.
	for path, want := range map[string]struct {
		status int
		code   string
	}{
		"/v2/org/app/manifests/v1?ns=ghcr.io":                                                 {http.StatusNotFound, "MANIFEST_UNKNOWN"},
		"/v2/org/app/manifests/v1-amd64?ns=ghcr.io":                                           {http.StatusNotFound, "MANIFEST_UNKNOWN"},
		"/v2/org/app/manifests/" + amdDigest.String() + "?ns=ghcr.io":                         {http.StatusOK, ""},
		"/v2/org/app/manifests/" + indexDigest.String() + "?ns=ghcr.io":                       {http.StatusOK, ""},
		"/v2/org/app/manifests/" + digest.FromBytes(arm).String() + "?ns=ghcr.io":             {http.StatusNotFound, "MANIFEST_UNKNOWN"},
		"/v2/org/app/blobs/" + digest.FromString("layer amd64").String() + "?ns=ghcr.io":      {http.StatusNotFound, "BLOB_UNKNOWN"},
		"/v2/org/app/blobs/" + digest.FromString("config amd64").String() + "?ns=ghcr.io":     {http.StatusNotFound, "BLOB_UNKNOWN"},
		"/v2/org/app/referrers/" + amdDigest.String() + "?ns=ghcr.io&artifactType=" + "x%2Fy": {http.StatusOK, ""},
	} {
		status, body := httpGet(t, reg.URL+path)
		var e struct{ Errors []struct{ Code string } }
		_ = json.Unmarshal(body, &e)
		if status != want.status || (want.code != "" && (len(e.Errors) == 0 || e.Errors[0].Code != want.code)) {
			t.Errorf("GET %s: %d %s, want %d %s", path, status, body, want.status, want.code)
		}
	}
}

// httpGet GETs u anonymously, accepting any manifest type, and returns the
// status and body.
func httpGet(t *testing.T, u string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"}, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
