package main

import (
	"io"
	"testing"
)

func TestParseFlagsEnvDefaults(t *testing.T) {
	env := map[string]string{"HERMES_SNAPSHOTTER_ROOT": "/env/root", "HERMES_SNAPSHOTTER_LOG_LEVEL": "debug"}
	s, err := parse([]string{"-log-level", "warn"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.root != "/env/root" || s.logLevel != "warn" || s.socket != "/run/hermes-snapshotter/hermes.sock" || s.config != defaultConfig {
		t.Fatalf("got %+v", s)
	}
	if _, err := parse([]string{"extra"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Fatal("stray argument accepted")
	}
}
