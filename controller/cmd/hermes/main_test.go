package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/registry/cli"
)

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"build", "--help"}, {"build", "-h"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != cli.ExitOK || stdout.Len() == 0 {
			t.Errorf("%q: exit %d, stdout %d bytes, stderr %q", args, code, stdout.Len(), stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, &stdout, &stderr); code != cli.ExitUsage || !strings.Contains(stderr.String(), "unknown command") {
		t.Errorf("unknown command: exit %d, stderr %q", code, stderr.String())
	}
}

// TestDefaultsAreTheLibrarys: with no flags, `hermes build` builds with
// exactly builder.DefaultSettings().
func TestDefaultsAreTheLibrarys(t *testing.T) {
	c := buildCommand(nil, nil)
	s := c.New()
	if err := cli.Parse(c, s, []string{"--cache", "127.0.0.1:1", "img"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.indexSettings()
	if err != nil || got != builder.DefaultSettings() {
		t.Fatalf("got %+v, %v; want %+v", got, err, builder.DefaultSettings())
	}
	s = c.New()
	if err := cli.Parse(c, s, []string{"--cache", "c:1", "--span-size", "1MiB", "--min-layer-size", "0", "img"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.indexSettings(); got.SpanSize != 1<<20 || got.AlignFilesFrom != 256<<10 || got.MinLayerSize != 0 {
		t.Fatalf("span 1MiB, min 0: %+v", got)
	}
	s = c.New()
	if err := cli.Parse(c, s, []string{"--cache", "c:1", "--align-files-from", "0", "img"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.indexSettings(); got.AlignFilesFrom != 0 {
		t.Fatalf("alignment off: %+v", got)
	}
}
