package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/cli"
)

// TestSettings checks that flags and environment reach the settings and
// that bad values stop the program before it serves.
func TestSettings(t *testing.T) {
	t.Setenv("HERMES_REGISTRY_ADDR", "127.0.0.1:1")
	t.Setenv("HERMES_REGISTRY_AUTH_READS", "true")
	t.Setenv("HERMES_REGISTRY_REFERRERS_CACHE_TTL", "2s")
	var s settings
	if err := cli.Parse(command, &s, []string{"-log-level", "debug", "--disable-delete"}); err != nil {
		t.Fatal(err)
	}
	if s.Addr != "127.0.0.1:1" || !s.AuthReads || s.ReferrersCacheTTL.String() != "2s" || s.LogLevel.String() != "DEBUG" || !s.DisableDelete || s.OpsAddr != ":5001" {
		t.Fatalf("settings = %+v", s)
	}
}

// TestDefaults checks the defaults users get: the referrers cache TTL is
// short, so replicas over shared storage see each other's referrers.
func TestDefaults(t *testing.T) {
	var s settings
	if err := cli.Parse(command, &s, nil); err != nil {
		t.Fatal(err)
	}
	if s.ReferrersCacheTTL != registry.DefaultReferrersCacheTTL || s.AllowAnonymousWrites {
		t.Fatalf("defaults = %+v; want --referrers-cache-ttl %s, no anonymous writes", s, registry.DefaultReferrersCacheTTL)
	}
	s.TokenFile = "token"
	for ttl, want := range map[time.Duration]time.Duration{0: -1, time.Second: time.Second} {
		s.ReferrersCacheTTL = ttl
		cfg, err := s.Config(nil)
		if err != nil || cfg.ReferrersCacheTTL != want {
			t.Errorf("--referrers-cache-ttl %s: Config TTL %s, %v; want %s", ttl, cfg.ReferrersCacheTTL, err, want)
		}
	}
}

func TestBadSettings(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	for name, c := range map[string]struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		"bad env bool":           {nil, map[string]string{"HERMES_REGISTRY_AUTH_READS": "maybe"}, cli.ExitUsage, "HERMES_REGISTRY_AUTH_READS"},
		"bad env duration":       {nil, map[string]string{"HERMES_REGISTRY_REFERRERS_CACHE_TTL": "soon"}, cli.ExitUsage, "HERMES_REGISTRY_REFERRERS_CACHE_TTL"},
		"bad flag":               {[]string{"--referrers-cache-size", "many"}, nil, cli.ExitUsage, "referrers-cache-size"},
		"log level":              {[]string{"--log-level", "loud"}, nil, cli.ExitUsage, "log-level"},
		"tls half":               {[]string{"--tls-cert", "c.pem"}, nil, cli.ExitError, "--tls-key"},
		"reads without auth":     {[]string{"--root", root, "--auth-reads"}, nil, cli.ExitError, "reads require auth"},
		"missing htpasswd":       {[]string{"--root", root, "--htpasswd", "/nonexistent"}, nil, cli.ExitError, "htpasswd"},
		"missing storage config": {[]string{"--storage-config", "/nonexistent.yml", "--allow-anonymous-writes"}, nil, cli.ExitError, "storage config"},
		"address taken":          {[]string{"--root", root, "--addr", "256.0.0.1:1", "--allow-anonymous-writes"}, nil, cli.ExitError, "registry API"},
		"anonymous and htpasswd": {[]string{"--root", root, "--htpasswd", "/nonexistent", "--allow-anonymous-writes"}, nil, cli.ExitError, "contradicts"},
		"negative ttl":           {[]string{"--root", root, "--referrers-cache-ttl", "-1s", "--allow-anonymous-writes"}, nil, cli.ExitError, "negative"},
		"bad env allow":          {[]string{"--root", root}, map[string]string{"HERMES_REGISTRY_ALLOW_ANONYMOUS_WRITES": "perhaps"}, cli.ExitUsage, "HERMES_REGISTRY_ALLOW_ANONYMOUS_WRITES"},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := cli.Run(context.Background(), command, append(c.args, "--ops-addr", ""), &stdout, &stderr)
			if code != c.code || !strings.Contains(stderr.String(), c.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and an error about %q", code, stderr.String(), c.code, c.want)
			}
		})
	}
}

// TestWriteCredential checks that the registry never takes anonymous
// writes unless told to: without a credential it exits 1 and says what to
// do; told to, it starts and warns.
func TestWriteCredential(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	var stdout, stderr bytes.Buffer
	code := cli.Run(context.Background(), command, []string{"--root", root, "--addr", "127.0.0.1:0", "--ops-addr", ""}, &stdout, &stderr)
	if code != cli.ExitError {
		t.Fatalf("no credential: exit %d, want %d; stderr %q", code, cli.ExitError, stderr.String())
	}
	for _, want := range []string{"no write credential", "--htpasswd", "--token-file", "--allow-anonymous-writes"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("no credential: stderr %q lacks %q", stderr.String(), want)
		}
	}

	// Told to: it starts (and stops at once: the context is done) and warns.
	for _, c := range []struct {
		args []string
		env  map[string]string
	}{
		{args: []string{"--allow-anonymous-writes"}},
		{env: map[string]string{"HERMES_REGISTRY_ALLOW_ANONYMOUS_WRITES": "true"}},
	} {
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		stdout.Reset()
		stderr.Reset()
		args := append([]string{"--root", root, "--addr", "127.0.0.1:0", "--ops-addr", "", "--log-format", "text"}, c.args...)
		if code := cli.Run(ctx, command, args, &stdout, &stderr); code != cli.ExitOK {
			t.Fatalf("%v %v: exit %d, stderr %q", c.args, c.env, code, stderr.String())
		}
		var warned bool
		for _, line := range strings.Split(stderr.String(), "\n") {
			warned = warned || (strings.Contains(line, "level=WARN") && strings.Contains(line, "anonymous writes are allowed"))
		}
		if !warned {
			t.Errorf("%v %v: no warning line about anonymous writes in %q", c.args, c.env, stderr.String())
		}
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := cli.Run(context.Background(), command, []string{"--help"}, &stdout, &stderr); code != cli.ExitOK {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"--addr", "HERMES_REGISTRY_ADDR", "--ops-addr", "--storage-config", "--htpasswd", "--allow-anonymous-writes", "HERMES_REGISTRY_ALLOW_ANONYMOUS_WRITES"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stdout.String())
		}
	}
}

// TestGCSettings checks the garbage collection defaults (hourly, an hour of
// grace) and that a grace of nothing is refused.
func TestGCSettings(t *testing.T) {
	var s settings
	if err := cli.Parse(command, &s, nil); err != nil {
		t.Fatal(err)
	}
	if s.GCInterval != time.Hour || s.GCGrace != time.Hour {
		t.Fatalf("--blob-gc-interval %s --blob-gc-grace %s; want 1h each", s.GCInterval, s.GCGrace)
	}
	s.AllowAnonymousWrites = true
	s.GCGrace = 0
	if _, err := s.Config(nil); err == nil || !strings.Contains(err.Error(), "--blob-gc-grace") {
		t.Errorf("--blob-gc-grace 0: %v; want an error naming it", err)
	}
	s.GCInterval = 0
	if cfg, err := s.Config(nil); err != nil || cfg.GC.Interval != 0 {
		t.Errorf("--blob-gc-interval 0: %+v, %v; want collection off", cfg.GC, err)
	}
}
