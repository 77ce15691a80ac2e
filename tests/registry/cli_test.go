package registry

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
