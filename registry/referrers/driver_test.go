package referrers

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestParseEntryPath(t *testing.T) {
	subject, ref := digest.FromString("s"), digest.FromString("r")
	e, ok := ParseEntryPath(entryPath("docker.io/library/nginx", subject, ref))
	if !ok || e.Repository != "docker.io/library/nginx" || e.Subject != subject || e.Referrer != ref {
		t.Fatalf("ParseEntryPath = %+v, %v", e, ok)
	}
	for _, p := range []string{subjectDir("a/b", subject), Root + "/x", "/elsewhere/_referrers/sha256/aa/sha256-bb", entryPath("a", subject, ref) + ".tmp"} {
		if _, ok := ParseEntryPath(p); ok {
			t.Errorf("ParseEntryPath(%q) parsed", p)
		}
	}
}
