package registry

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/tests/harness"
)

// conformancePkg is the OCI distribution-spec conformance suite, pinned in
// this module's go.mod as a tool.
const conformancePkg = "github.com/opencontainers/distribution-spec/conformance"

// TestConformance runs the OCI distribution-spec conformance suite (pull,
// push, content discovery, content management, plus blob upload cancel)
// against hermes-registry with write auth on, and requires every test to
// pass. Skips are the suite's optional features that distribution does not
// offer (a blob pushed in the POST alone, a mount without a source
// repository), which the spec leaves to the registry.
func TestConformance(t *testing.T) {
	bin := buildConformance(t)
	reg := harness.StartHermesRegistry(t, harness.HermesRegistryOptions{Auth: true})
	results := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.v")
	cmd.Dir = results
	cmd.Env = append(os.Environ(),
		"OCI_ROOT_URL="+reg.URL,
		"OCI_NAMESPACE=conformance/repo1",
		"OCI_CROSSMOUNT_NAMESPACE=conformance/repo2",
		"OCI_USERNAME="+reg.Username,
		"OCI_PASSWORD="+reg.Password,
		"OCI_TEST_PULL=1",
		"OCI_TEST_PUSH=1",
		"OCI_TEST_CONTENT_DISCOVERY=1",
		"OCI_TEST_CONTENT_MANAGEMENT=1",
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_RESULTS_DIR="+results,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	report := out.String()
	counts := conformanceCounts(report)
	t.Logf("OCI conformance: %d passed, %d failed, %d errors, %d skipped, %d disabled (of %d)",
		counts["Pass"], counts["FAIL"], counts["Error"], counts["Skip"], counts["Disabled"], counts["Total"])
	if runErr != nil || counts["FAIL"] != 0 || counts["Error"] != 0 || counts["Pass"] == 0 ||
		!strings.Contains(report, "OCI Conformance Result: Pass") {
		t.Fatalf("conformance suite failed (%v):\n%s", runErr, report)
	}
	// Every API the four categories cover passed; none was merely skipped.
	for _, api := range []string{
		"Ping", "Blob push", "Blob post put", "Blob chunked", "Blob streaming", "Blob mount", "Blob get",
		"Blob get range", "Blob head", "Blob delete", "Blob upload cancel", "Manifest put by digest",
		"Manifest put by tag", "Manifest put with subject", "Manifest get by digest", "Manifest get by tag",
		"Manifest head by digest", "Manifest head by tag", "Manifest delete", "Tag listing", "Tag delete",
		"Referrers",
	} {
		re := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(api) + `\.*:\s+(\S+)$`)
		m := re.FindStringSubmatch(report)
		if m == nil || m[1] != "Pass" {
			t.Errorf("API %q: %v, want Pass", api, m)
		}
	}
}

// conformanceCounts reads the "Pass....: N" summary lines of the report.
func conformanceCounts(report string) map[string]int {
	counts := map[string]int{}
	re := regexp.MustCompile(`(?m)^\s+(Disabled|Skip|Pass|FAIL|Error|Total)\.*:\s+(\d+)$`)
	for _, m := range re.FindAllStringSubmatch(report, -1) {
		n, _ := strconv.Atoi(m[2])
		counts[m[1]] = n
	}
	return counts
}

// buildConformance compiles the conformance suite's test binary with
// `go test -c`, from this module so go.mod pins its version.
func buildConformance(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		harness.Missing(t, "go toolchain (to build the conformance suite): %v", err)
	}
	out := filepath.Join(t.TempDir(), "conformance.test")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "test", "-c", "-o", out, conformancePkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c %s: %v\n%s", conformancePkg, err, b)
	}
	return out
}
