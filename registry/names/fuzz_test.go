package names

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// FuzzFromMirror checks the mirror rewrite on arbitrary input: it never
// panics, rejects with a *NameError only, and what it accepts is a valid,
// lower-case repository name that maps to itself and agrees with Repository
// for the same image.
func FuzzFromMirror(f *testing.F) {
	for _, s := range [][2]string{
		{"library/nginx", "docker.io"}, {"nginx", "index.docker.io"}, {"test/img", "127.0.0.1:5000"},
		{"app", "[::1]:5000"}, {"a/../b", ""}, {"Library/x", ""}, {"docker.io/library/nginx", ""},
		{"a__b-c.d/e", "registry-1.docker.io"}, {"x", "Quay.IO"}, {"", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, ns string) {
		repo, err := FromMirror(name, ns)
		if err != nil {
			var ne *NameError
			if !errors.As(err, &ne) || !errors.Is(err, ErrInvalidName) {
				t.Fatalf("FromMirror(%q, %q): error %v is not a *NameError", name, ns, err)
			}
			return
		}
		if strings.Contains(repo, "..") || strings.ToLower(repo) != repo || len(repo) > MaxRepositoryLength {
			t.Fatalf("FromMirror(%q, %q) = %q: not a valid cache repository", name, ns, repo)
		}
		if _, err := reference.ParseNamed("cache.test/" + repo); err != nil && len(repo) < 200 {
			t.Fatalf("FromMirror(%q, %q) = %q: not a repository name: %v", name, ns, repo, err)
		}
		again, err := FromMirror(repo, "")
		if err != nil || again != repo {
			t.Fatalf("FromMirror(%q, \"\") = %q, %v; want it to map to itself", repo, again, err)
		}
		if ns != "" {
			if ref, err := reference.ParseNormalizedNamed(ns + "/" + name); err == nil && reference.Domain(ref) == ns {
				if got := Repository(ref); got != repo {
					t.Fatalf("Repository(%q) = %q, FromMirror(%q, %q) = %q", ref, got, name, ns, repo)
				}
			}
		}
	})
}
