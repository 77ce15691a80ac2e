package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/hermes-oci/hermes/tools/imagegen"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"--cache-dir", t.TempDir()}, args...), &out, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return strings.TrimSpace(out.String()), err
}

func TestDigestMatchesLibrary(t *testing.T) {
	got, err := runCLI(t, "--busybox=false", "--layers", "random:64KiB,compressible:256KiB:files=10", "--entrypoint", `["/bin/sh","-c"]`, "--cmd", "echo hi")
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagegen.Image(imagegen.Spec{
		Layers: []imagegen.Layer{
			{Kind: imagegen.Random, Size: 64 << 10, Seed: 1},
			{Kind: imagegen.Compressible, Size: 256 << 10, Files: 10, Seed: 2},
		},
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"echo", "hi"},
	}, imagegen.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if got != want.String() {
		t.Errorf("CLI printed %q, library digest %s", got, want)
	}
}

func TestIndexDigest(t *testing.T) {
	got, err := runCLI(t, "--busybox=false", "--layers", "random:16k", "--platforms", "linux/amd64,linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	spec := imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Random, Size: 16 << 10, Seed: 1}}}
	idx, err := imagegen.Index(map[string]imagegen.Spec{"linux/amd64": spec, "linux/arm64": spec}, imagegen.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	if got != want.String() {
		t.Errorf("CLI printed %q, library index digest %s", got, want)
	}
}

func TestBadInput(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--preset", "X"},
		{"--layers", "zip:1M"},
		{"--preset", "R", "--layers", "random:1M"},
		{"--edge-case", "--preset", "demo"},
		{"--layers", "random:1k", "--entrypoint", `["unterminated`},
		{"--layers", "random:1k", "--platforms", "amd64"},
	} {
		if _, err := runCLI(t, args...); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	if _, err := runCLI(t, "--layers", "zip:1M"); !errors.Is(err, imagegen.ErrInvalidSpec) {
		t.Errorf("bad layer: %v, want ErrInvalidSpec", err)
	}
}
