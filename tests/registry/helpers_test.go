package registry

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/tests/harness"
)

// runEnv runs a CLI with extra environment and returns its stdout; failure
// ends the test with stderr.
func runEnv(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	out, err := runEnvErr(env, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return out
}

// runEnvErr is runEnv returning the failure, stderr included.
func runEnvErr(env []string, bin string, args ...string) (string, error) {
	return harness.RunEnvErr(2*time.Minute, env, bin, args...)
}

// call sends a request to reg with its write credential, if it has one; u
// is a URL or a path on reg. It returns the response, its body, and the
// code of the first OCI error in the body ("" if none).
func call(t *testing.T, reg *harness.HermesRegistry, method, u, contentType string, body []byte) (*http.Response, []byte, string) {
	t.Helper()
	if !strings.HasPrefix(u, "http") {
		u = reg.URL + u
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	reg.SetBasicAuth(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Errors []struct{ Code string } }
	if json.Unmarshal(b, &e) == nil && len(e.Errors) > 0 {
		return resp, b, e.Errors[0].Code
	}
	return resp, b, ""
}

// writeTar writes a layer tarball of files (name -> content).
func writeTar(t *testing.T, path string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
