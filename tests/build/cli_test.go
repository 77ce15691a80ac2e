package build_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// cli is one run of `hermes build`.
type cli struct {
	stdout, stderr string
	code           int
}

// runCLI runs hermes with args and TMPDIR=tmp; start, if set, is called once
// the process runs.
func runCLI(t *testing.T, tmp string, args []string, start func(*os.Process)) cli {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.HermesBin(t, "hermes"), args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "DOCKER_CONFIG="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if start != nil {
		start(cmd.Process)
	}
	err := cmd.Wait()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("hermes %v: %v", args, err)
	}
	return cli{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// TestCLI runs `hermes build` as users do: progress on stderr, result on
// stdout, exit status 0/1/2, credentials from a pull-secret file, and Ctrl-C
// leaving nothing behind.
func TestCLI(t *testing.T) {
	origin := harness.StartRegistry(t, harness.RegistryOptions{})
	private := harness.StartRegistry(t, harness.RegistryOptions{Htpasswd: harness.HtpasswdFile(t, "puller", "s3cret")})
	spec := imagegen.Spec{Layers: []imagegen.Layer{
		{Kind: imagegen.Random, Size: 3 << 20, Seed: 41},
		{Kind: imagegen.Compressible, Size: 2 << 20, Files: 40, Seed: 42},
	}}
	img := mustImage(t, spec)
	ref := origin.Host + "/cli/img:v1"
	manifestDigest := push(t, ref, img)
	privRef := private.Host + "/cli/img:v1"
	if _, err := imagegen.Push(context.Background(), privRef, img, remote.WithAuth(&authn.Basic{Username: "puller", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	cache := startCache(t)

	t.Run("build", func(t *testing.T) {
		tmp := t.TempDir()
		r := runCLI(t, tmp, []string{"build", "--cache", cache.Host, "--min-layer-size", "0", "--progress", "plain", "--output", "json", ref}, nil)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		var res builder.Result
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("result JSON: %v\n%s", err, r.stdout)
		}
		if len(res.Platforms) != 1 || res.Platforms[0].Manifest.Digest != manifestDigest || res.Platforms[0].Index == nil {
			t.Fatalf("result %+v", res)
		}
		if strings.Count(r.stderr, " built ") != 2 {
			t.Errorf("progress shows %d built layers, want 2:\n%s", strings.Count(r.stderr, " built "), r.stderr)
		}
		requireNoTempFiles(t, tmp)

		r = runCLI(t, tmp, []string{"build", "--cache", cache.Host, "--min-layer-size", "0", "--progress", "none", ref}, nil)
		if r.code != 0 || !strings.Contains(r.stdout, "already in") || !strings.Contains(r.stdout, string(res.Platforms[0].Index.Digest)) {
			t.Fatalf("second run: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"build", ref},                   // no cache
			{"build", "--cache", cache.Host}, // no image
			{"build", "--cache", cache.Host, "--span-size", "lots", ref},
			{"build", "--cache", cache.Host, "--platform", "linux/amd64/v9/x", ref},
			{"frobnicate"},
		} {
			if r := runCLI(t, t.TempDir(), args, nil); r.code != 2 {
				t.Errorf("%v: exit %d, want 2\n%s", args, r.code, r.stderr)
			}
		}
	})

	t.Run("private", func(t *testing.T) {
		cache := startCache(t)
		tmp := t.TempDir()
		r := runCLI(t, tmp, []string{"build", "--cache", cache.Host, "--progress", "none", privRef}, nil)
		if r.code != 1 || !strings.Contains(r.stderr, "unauthorized") || !strings.Contains(r.stderr, "401") {
			t.Fatalf("without credentials: exit %d, want 1 with a clear 401\n%s", r.code, r.stderr)
		}
		cache.requireEmpty(t)
		requireNoTempFiles(t, tmp)

		secret, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
			"data": map[string][]byte{".dockerconfigjson": []byte(fmt.Sprintf(`{"auths":{%q:{"username":"puller","password":"s3cret"}}}`, private.Host))}})
		path := filepath.Join(t.TempDir(), "secret.json")
		if err := os.WriteFile(path, secret, 0o600); err != nil {
			t.Fatal(err)
		}
		r = runCLI(t, tmp, []string{"build", "--cache", cache.Host, "--min-layer-size", "0", "--progress", "none", "--pull-secret", path, privRef}, nil)
		if r.code != 0 || !strings.Contains(r.stdout, "pushed index") {
			t.Fatalf("with the secret: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
		}
		requireNoTempFiles(t, tmp)
	})

	t.Run("interrupt", func(t *testing.T) {
		big := mustImage(t, bigImage())
		push(t, origin.Host+"/cli/big:v1", big)
		cache := startCache(t)
		p := startProxy(t, origin.Host, 4<<20, false)
		tmp := t.TempDir()
		r := runCLI(t, tmp, []string{"build", "--cache", cache.Host, "--min-layer-size", "0", "--progress", "plain", p.Host + "/cli/big:v1"},
			func(proc *os.Process) {
				select {
				case <-p.reached:
				case <-time.After(time.Minute):
					t.Error("the build never reached the stall")
				}
				proc.Signal(syscall.SIGINT)
			})
		if r.code != 1 || !strings.Contains(r.stderr, "cancelled") {
			t.Fatalf("after SIGINT: exit %d, want 1 saying cancelled\n%s", r.code, r.stderr)
		}
		requireNoTempFiles(t, tmp)
		cache.requireEmpty(t)
	})
}
