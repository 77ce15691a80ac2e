package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/hermes-oci/hermes/registry/cli"
)

func TestParseFlagsEnvDefaults(t *testing.T) {
	t.Setenv("HERMES_SNAPSHOTTER_ROOT", "/env/root")
	t.Setenv("HERMES_SNAPSHOTTER_LOG_LEVEL", "debug")
	var s settings
	if err := cli.Parse(command, &s, []string{"-log-level", "warn"}); err != nil {
		t.Fatal(err)
	}
	if s.Root != "/env/root" || s.LogLevel.String() != "WARN" || s.Socket != "/run/hermes-snapshotter/hermes.sock" || s.Config != defaultConfig {
		t.Fatalf("got %+v", s)
	}
	if err := cli.Parse(command, &s, []string{"extra"}); err == nil {
		t.Fatal("stray argument accepted")
	}
}

// TestHelp: --help exits 0 with the settings on stdout (it exited 1 once).
func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := cli.Run(context.Background(), command, []string{"--help"}, &stdout, &stderr); code != cli.ExitOK {
		t.Fatalf("--help: exit %d, stderr %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "HERMES_SNAPSHOTTER_SOCKET") {
		t.Fatalf("help:\n%s", stdout.String())
	}
}
