package buildertest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/controller/builder"
)

// Env is what Run needs of a builder under test: the builder, a way to put
// images at its origin, and a way to make the origin fail.
type Env interface {
	// Builder is the builder under test.
	Builder() builder.Interface
	// AddImage puts a single-platform linux/amd64 image of layers layers
	// (each at least 1 MiB compressed) at the origin as repo:v1 and
	// returns its reference. Adding it again moves the tag to a new image.
	AddImage(t *testing.T, repo string, layers int) string
	// SetOriginStatus makes the origin answer every request with status;
	// 0 serves normally again.
	SetOriginStatus(status int)
}

// Run checks that a builder behaves as callers rely on: results, Existed,
// progress, and the error kinds and their Retryable verdicts.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	settings := builder.DefaultSettings()
	settings.MinLayerSize = 0
	ctx := context.Background()

	t.Run("BuildThenExisted", func(t *testing.T) {
		env := newEnv(t)
		ref := env.AddImage(t, "suite/app", 2)
		var built int
		res, err := env.Builder().Build(ctx, builder.Request{Image: ref, Settings: settings, Progress: func(p builder.Progress) {
			if p.State == builder.LayerBuilt {
				built++
			}
		}})
		if err != nil {
			t.Fatalf("build: %v", err)
		}
		if len(res.Platforms) != 1 || res.Platforms[0].Index == nil || res.Platforms[0].Existed || res.Digest == "" {
			t.Fatalf("result %+v: want one platform with a new index", res)
		}
		p := res.Platforms[0]
		if p.Platform.OS != "linux" || p.Platform.Architecture != "amd64" || p.Manifest.Digest != res.Digest {
			t.Errorf("platform %+v manifest %s, image %s", p.Platform, p.Manifest.Digest, res.Digest)
		}
		if len(p.Layers) != 2 || built != 2 {
			t.Errorf("%d layer results, %d built events; want 2 and 2", len(p.Layers), built)
		}
		again, err := env.Builder().Build(ctx, builder.Request{Image: ref, Settings: settings})
		if err != nil {
			t.Fatalf("second build: %v", err)
		}
		if !again.Platforms[0].Existed || again.Platforms[0].Index.Digest != p.Index.Digest {
			t.Errorf("second build %+v: want Existed with index %s", again.Platforms[0], p.Index.Digest)
		}
		byDigest, err := env.Builder().Build(ctx, builder.Request{Image: ref + "@" + string(res.Digest), Settings: settings})
		if err != nil || !byDigest.Platforms[0].Existed {
			t.Errorf("by digest: %+v, %v; want Existed", byDigest, err)
		}
		other := settings.WithSpanSize(1 << 20)
		rebuilt, err := env.Builder().Build(ctx, builder.Request{Image: ref, Settings: other})
		if err != nil || rebuilt.Platforms[0].Existed || rebuilt.Platforms[0].Index.Digest == p.Index.Digest {
			t.Errorf("other settings: %+v, %v; want a new index", rebuilt, err)
		}
	})

	t.Run("Resolve", func(t *testing.T) {
		env := newEnv(t)
		ref := env.AddImage(t, "suite/resolve", 1)
		r, err := env.Builder().Resolve(ctx, builder.Request{Image: ref})
		if err != nil {
			t.Fatalf("resolve: %v", err)
		}
		if r.Digest == "" || len(r.Platforms) != 1 || r.Platforms[0].Manifest.Digest != r.Digest || r.Platforms[0].Platform.Architecture != "amd64" {
			t.Fatalf("resolved %+v", r)
		}
		built, err := env.Builder().Build(ctx, builder.Request{Image: ref, Settings: settings})
		if err != nil || built.Digest != r.Digest {
			t.Fatalf("build after resolve: %+v, %v; want digest %s", built, err, r.Digest)
		}
		env.AddImage(t, "suite/resolve", 1) // the tag moves
		moved, err := env.Builder().Resolve(ctx, builder.Request{Image: ref})
		if err != nil || moved.Digest == r.Digest {
			t.Fatalf("moved tag: %+v, %v; want a new digest", moved, err)
		}
		if old, err := env.Builder().Resolve(ctx, builder.Request{Image: ref + "@" + string(r.Digest)}); err != nil || old.Digest != r.Digest {
			t.Fatalf("by digest: %+v, %v", old, err)
		}
		host := ref[:len(ref)-len("/suite/resolve:v1")]
		if _, err := env.Builder().Resolve(ctx, builder.Request{Image: host + "/suite/none:v1"}); !errors.Is(err, builder.ErrNotFound) || builder.Retryable(err) {
			t.Errorf("unknown image: %v", err)
		}
		env.SetOriginStatus(http.StatusServiceUnavailable)
		if _, err := env.Builder().Resolve(ctx, builder.Request{Image: ref}); !errors.Is(err, builder.ErrUnavailable) || !builder.Retryable(err) {
			t.Errorf("origin 503: %v", err)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		env := newEnv(t)
		ref := env.AddImage(t, "suite/errs", 1)
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		check := func(name string, ctx context.Context, req builder.Request, kind error, retry bool) {
			t.Helper()
			_, err := env.Builder().Build(ctx, req)
			if !errors.Is(err, kind) {
				t.Errorf("%s: %v, want %v", name, err, kind)
			}
			if builder.Retryable(err) != retry {
				t.Errorf("%s: Retryable(%v) = %v, want %v", name, err, !retry, retry)
			}
		}
		host := ref[:len(ref)-len("/suite/errs:v1")]
		if err := env.Builder().Publish(ctx, builder.Request{Image: ref}); err != nil {
			t.Errorf("publish %s: %v", ref, err)
		}
		if err := env.Builder().Publish(ctx, builder.Request{Image: host + "/suite/errs@sha256:" + strings.Repeat("0", 64)}); !errors.Is(err, builder.ErrInvalidRequest) {
			t.Errorf("publish without a tag: %v", err)
		}
		if err := env.Builder().Publish(ctx, builder.Request{Image: host + "/suite/nothing:v1"}); !errors.Is(err, builder.ErrNotFound) {
			t.Errorf("publish of an unknown image: %v", err)
		}
		check("unknown image", ctx, builder.Request{Image: host + "/suite/nothing:v1", Settings: settings}, builder.ErrNotFound, false)
		check("unknown platform", ctx, builder.Request{Image: ref, Settings: settings, Platforms: []ocispec.Platform{{OS: "linux", Architecture: "s390x"}}}, builder.ErrNotFound, false)
		check("bad reference", ctx, builder.Request{Image: "UPPER:bad:ref", Settings: settings}, builder.ErrInvalidRequest, false)
		check("no settings", ctx, builder.Request{Image: ref}, builder.ErrInvalidRequest, false)
		check("cancelled", cancelled, builder.Request{Image: ref, Settings: settings}, builder.ErrCancelled, true)
		env.SetOriginStatus(http.StatusServiceUnavailable)
		check("origin 503", ctx, builder.Request{Image: ref, Settings: settings}, builder.ErrUnavailable, true)
		env.SetOriginStatus(http.StatusUnauthorized)
		check("origin 401", ctx, builder.Request{Image: ref, Settings: settings}, builder.ErrUnauthorized, false)
		env.SetOriginStatus(0)
		if res, err := env.Builder().Build(ctx, builder.Request{Image: ref, Settings: settings}); err != nil || res.Platforms[0].Index == nil {
			t.Errorf("origin back: %+v, %v", res, err)
		}
	})
}
