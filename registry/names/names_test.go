package names

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

func TestParseReference(t *testing.T) {
	const dgst = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa"
	for in, want := range map[string]string{
		"nginx":                           "docker.io/library/nginx:latest",
		"nginx:1.27":                      "docker.io/library/nginx:1.27",
		"library/nginx":                   "docker.io/library/nginx:latest",
		"docker.io/nginx":                 "docker.io/library/nginx:latest",
		"index.docker.io/library/nginx:1": "docker.io/library/nginx:1",
		"registry-1.docker.io/nginx":      "docker.io/library/nginx:latest",
		"ghcr.io/org/app:v1":              "ghcr.io/org/app:v1",
		"127.0.0.1:5000/test/img":         "127.0.0.1:5000/test/img:latest",
		"nginx@" + dgst:                   "docker.io/library/nginx@" + dgst,
		"quay.io/a/b:t@" + dgst:           "quay.io/a/b:t@" + dgst,
		"localhost/app":                   "localhost/app:latest",
	} {
		got, err := ParseReference(in)
		if err != nil {
			t.Errorf("ParseReference(%q): %v", in, err)
			continue
		}
		if got.String() != want {
			t.Errorf("ParseReference(%q) = %q, want %q", in, got, want)
		}
	}
	for _, in := range []string{"", "Nginx", "docker.io/Library/nginx", "a/../b", "nginx:", "nginx@sha256:12", strings.Repeat("a", 300)} {
		if _, err := ParseReference(in); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("ParseReference(%q) = %v, want ErrInvalidReference", in, err)
		}
	}
}

func TestRepository(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":                         "docker.io/library/nginx",
		"nginx:1.27":                    "docker.io/library/nginx",
		"index.docker.io/library/nginx": "docker.io/library/nginx",
		"registry-1.docker.io/nginx":    "docker.io/library/nginx",
		"bitnami/redis":                 "docker.io/bitnami/redis",
		"ghcr.io/org/app":               "ghcr.io/org/app",
		"Registry.Example.com/team/app": "registry.example.com/team/app",
		"127.0.0.1:5000/test/img":       "127.0.0.1_5000/test/img",
		"localhost:5000/img":            "localhost_5000/img",
		"localhost/img":                 "localhost/img",
		"[::1]:5000/app":                "ip6__00000000000000000000000000000001_5000/app",
		"[2001:db8::1]/app":             "ip6__20010db8000000000000000000000001/app",
	} {
		named, err := reference.ParseNormalizedNamed(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got := Repository(named); got != want {
			t.Errorf("Repository(%q) = %q, want %q", in, got, want)
		}
		// The same repository whatever the normalization path.
		if ref, err := ParseReference(in); err != nil || Repository(ref) != want {
			t.Errorf("Repository(ParseReference(%q)) = %v, %v; want %q", in, ref, err, want)
		}
		// A cache repository is itself a valid, fixed repository name.
		if got, err := FromMirror(want, ""); err != nil || got != want {
			t.Errorf("FromMirror(%q, \"\") = %q, %v; want it unchanged", want, got, err)
		}
	}
	// Not folded by reference's own normalization, but by ours.
	named, _ := reference.ParseNamed("registry-1.docker.io/nginx")
	if got := Repository(named); got != "docker.io/library/nginx" {
		t.Errorf("Repository(registry-1.docker.io/nginx) = %q", got)
	}
}

func TestFromMirror(t *testing.T) {
	type in struct{ name, ns string }
	for in, want := range map[in]string{
		{"library/nginx", "docker.io"}:            "docker.io/library/nginx",
		{"nginx", "docker.io"}:                    "docker.io/library/nginx",
		{"library/nginx", "index.docker.io"}:      "docker.io/library/nginx",
		{"library/nginx", "registry-1.docker.io"}: "docker.io/library/nginx",
		{"org/app", "ghcr.io"}:                    "ghcr.io/org/app",
		{"test/img", "127.0.0.1:5000"}:            "127.0.0.1_5000/test/img",
		{"app", "[::1]:5000"}:                     "ip6__00000000000000000000000000000001_5000/app",
		{"app", "Quay.IO"}:                        "quay.io/app",
		{"docker.io/library/nginx", ""}:           "docker.io/library/nginx",
		{"index.docker.io/library/nginx", ""}:     "docker.io/library/nginx",
		{"registry-1.docker.io/nginx", ""}:        "docker.io/library/nginx",
		{"myorg/myrepo", ""}:                      "myorg/myrepo",
		{"single", ""}:                            "single",
	} {
		got, err := FromMirror(in.name, in.ns)
		if err != nil || got != want {
			t.Errorf("FromMirror(%q, %q) = %q, %v; want %q", in.name, in.ns, got, err, want)
		}
	}
	for _, bad := range []in{
		{"", ""}, {"", "docker.io"},
		{"../etc", ""}, {"a/../b", "docker.io"}, {"a..b", ""},
		{"Library/nginx", ""}, {"library/Nginx", "docker.io"},
		{"a//b", ""}, {"/a", ""}, {"a/", ""}, {"-a", ""}, {"a_-b", ""}, {"a___b", ""},
		{"a b", ""}, {"a:b", ""}, {"a@b", ""}, {"a%2fb", ""},
		{"library/nginx", "docker.io/x"}, {"library/nginx", "a_b"}, {"x", "[::1%eth0]"},
		{"x", "[zz::1]"}, {"x", "host:"}, {"x", "-host"},
		{strings.Repeat("a", 256), ""},
		{strings.Repeat("a/", 120) + "a", "registry.example.com:5000"},
	} {
		got, err := FromMirror(bad.name, bad.ns)
		var ne *NameError
		if !errors.Is(err, ErrInvalidName) || !errors.As(err, &ne) {
			t.Errorf("FromMirror(%q, %q) = %q, %v; want a *NameError", bad.name, bad.ns, got, err)
		}
	}
}

func TestCacheReference(t *testing.T) {
	const dgst = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa"
	for in, want := range map[string]string{
		"nginx":                      "cache.local:5000/docker.io/library/nginx:latest",
		"127.0.0.1:5000/a/b@" + dgst: "cache.local:5000/127.0.0.1_5000/a/b@" + dgst,
		"ghcr.io/org/app:v1@" + dgst: "cache.local:5000/ghcr.io/org/app:v1@" + dgst,
	} {
		ref, err := ParseReference(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := CacheReference("cache.local:5000", ref)
		if err != nil || got.String() != want {
			t.Errorf("CacheReference(%q) = %v, %v; want %q", in, got, err, want)
		}
	}
	// Valid at its source (path 248 characters) but too long with the host.
	ref, err := ParseReference(strings.Repeat("a", 240))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CacheReference("cache.local", ref); !errors.Is(err, ErrInvalidName) {
		t.Errorf("over-long cache reference: %v, want ErrInvalidName", err)
	}
}
