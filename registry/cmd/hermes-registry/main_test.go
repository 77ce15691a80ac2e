package main

import (
	"context"
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
)

// TestSettings checks that flags and environment reach the settings and
// that bad values stop the program before it serves.
func TestSettings(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s, envErr := bind(fs, env("HERMES_REGISTRY_ADDR", "127.0.0.1:1", "HERMES_REGISTRY_AUTH_READS", "true", "HERMES_REGISTRY_REFERRERS_CACHE_TTL", "2s"))
	if err := fs.Parse([]string{"-log-level", "debug", "-disable-delete"}); err != nil || envErr() != nil {
		t.Fatal(err, envErr())
	}
	if s.addr != "127.0.0.1:1" || !s.authReads || s.referrersTTL.String() != "2s" || s.logLevel != "debug" || !s.noDelete || s.opsAddr != ":5001" {
		t.Fatalf("settings = %+v", s)
	}

	root := filepath.Join(t.TempDir(), "root")
	for name, c := range map[string]struct {
		args []string
		env  func(string) string
		want string
	}{
		"bad env bool":           {nil, env("HERMES_REGISTRY_AUTH_READS", "maybe"), "HERMES_REGISTRY_AUTH_READS"},
		"bad env duration":       {nil, env("HERMES_REGISTRY_REFERRERS_CACHE_TTL", "soon"), "HERMES_REGISTRY_REFERRERS_CACHE_TTL"},
		"bad flag":               {[]string{"-referrers-cache-size", "many"}, env(), "referrers-cache-size"},
		"tls half":               {[]string{"-tls-cert", "c.pem"}, env(), "-tls-key"},
		"log level":              {[]string{"-log-level", "loud"}, env(), "log level"},
		"reads without auth":     {[]string{"-root", root, "-auth-reads"}, env(), "reads require auth"},
		"missing htpasswd":       {[]string{"-root", root, "-htpasswd", "/nonexistent"}, env(), "htpasswd"},
		"missing storage config": {[]string{"-storage-config", "/nonexistent.yml"}, env(), "storage config"},
	} {
		err := run(context.Background(), c.args, c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %q", name, err, c.want)
		}
	}
	if err := run(context.Background(), []string{"-help"}, env()); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-help: %v", err)
	}
}
