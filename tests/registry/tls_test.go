package registry

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hermes-oci/hermes/tests/harness"
)

// TestTLS serves the API over HTTPS (-tls-cert/-tls-key) and uses it with
// a Go client and with oras trusting the test CA.
func TestTLS(t *testing.T) {
	oras := harness.Bin(t, "oras")
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{TLS: true, Auth: true})
	pem, err := os.ReadFile(reg.CACert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/", nil)
	reg.SetBasicAuth(req)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(reg.URL, "https://") {
		t.Fatalf("GET %s/v2/: %s", reg.URL, resp.Status)
	}
	if resp, err := http.Get("http://" + reg.Host + "/v2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest { // Go answers plain HTTP on a TLS port with 400
			t.Errorf("plain HTTP on the TLS port: %s", resp.Status)
		}
	}

	dir := t.TempDir()
	env := []string{"HOME=" + dir}
	f := filepath.Join(dir, "f.txt")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/docker.io/library/tls:1"
	auth := []string{"--ca-file", reg.CACert, "-u", reg.Username, "-p", reg.Password}
	runEnv(t, env, oras, append([]string{"push", "--disable-path-validation", ref, f}, auth...)...)
	runEnv(t, env, oras, append([]string{"attach", "--disable-path-validation", "--artifact-type", "application/vnd.hermes.tls", ref, f}, auth...)...)
	if out := runEnv(t, env, oras, "discover", "--ca-file", reg.CACert, "--format", "json", ref); !strings.Contains(out, "application/vnd.hermes.tls") {
		t.Fatalf("oras discover over TLS: %s", out)
	}
}
