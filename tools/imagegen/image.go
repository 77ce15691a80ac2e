package imagegen

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultPlatform is the platform of a Spec that names none.
const DefaultPlatform = "linux/amd64"

// DefaultEnv is the environment of a Spec without Env.
var DefaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

func buildOptions(opts []Option) *options {
	o := &options{cacheDir: DefaultCacheDir(), busybox: BusyboxPath}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Image builds the image described by spec: an OCI manifest with one layer
// per Spec layer, bottom first. The same spec always yields the same digest.
func Image(spec Spec, opts ...Option) (v1.Image, error) {
	return image(spec, buildOptions(opts), &buildEnv{})
}

func image(spec Spec, o *options, env *buildEnv) (v1.Image, error) {
	plat, err := parsePlatform(spec.Platform)
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	adds := make([]mutate.Addendum, 0, len(spec.Layers))
	for i, l := range spec.Layers {
		if l.Kind == Busybox && env.busybox == nil {
			if env.busybox, err = loadBusybox(o.busybox); err != nil {
				return nil, err
			}
		}
		fl, err := buildLayer(l, env, o.cacheDir)
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, l.describe(), err)
		}
		adds = append(adds, mutate.Addendum{
			Layer:   fl,
			History: v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: "imagegen " + l.describe()},
		})
	}
	if img, err = mutate.Append(img, adds...); err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: Epoch}
	cfg.OS, cfg.Architecture, cfg.Variant = plat.OS, plat.Architecture, plat.Variant
	cfg.Config.Entrypoint = spec.Entrypoint
	cfg.Config.Cmd = spec.Cmd
	cfg.Config.Env = spec.Env
	if cfg.Config.Env == nil {
		cfg.Config.Env = DefaultEnv
	}
	return mutate.ConfigFile(img, cfg)
}

func parsePlatform(s string) (*v1.Platform, error) {
	if s == "" {
		s = DefaultPlatform
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return nil, fmt.Errorf("%w: platform %q: want os/arch[/variant]", ErrInvalidSpec, s)
	}
	return p, nil
}

// describe is a short human-readable summary for history and errors.
func (l Layer) describe() string {
	kind := map[Kind]string{Random: "random", Compressible: "compressible", Busybox: "busybox", Files: "files"}[l.Kind]
	if kind == "" {
		kind = fmt.Sprintf("kind(%d)", l.Kind)
	}
	switch l.Kind {
	case Random, Compressible:
		return fmt.Sprintf("%s size=%d files=%d seed=%d", kind, l.Size, l.Files, l.Seed)
	case Files:
		return fmt.Sprintf("%s entries=%d", kind, len(l.Entries))
	}
	return kind
}

// Index builds a multi-platform image index with one manifest per platform
// key ("linux/amd64", "linux/arm64"); each Spec's Platform is set from its
// key. Manifests are ordered by platform key so the digest is stable.
func Index(specs map[string]Spec, opts ...Option) (v1.ImageIndex, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("%w: an index needs at least one platform", ErrInvalidSpec)
	}
	o := buildOptions(opts)
	env := &buildEnv{}
	keys := make([]string, 0, len(specs))
	for k := range specs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	adds := make([]mutate.IndexAddendum, 0, len(keys))
	for _, k := range keys {
		spec := specs[k]
		spec.Platform = k
		plat, err := parsePlatform(k)
		if err != nil {
			return nil, err
		}
		img, err := image(spec, o, env)
		if err != nil {
			return nil, fmt.Errorf("platform %s: %w", k, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	return mutate.AppendManifests(idx, adds...), nil
}

// Push pushes a v1.Image or v1.ImageIndex to ref and returns its digest.
// Loopback registries (127.0.0.1, ::1, localhost) are spoken to over plain
// HTTP.
func Push(ctx context.Context, ref string, x remote.Taggable, opts ...remote.Option) (v1.Hash, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	// ggcr carries the context in an option; it is passed per call here,
	// never stored.
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	switch t := x.(type) {
	case v1.ImageIndex:
		d, err := t.Digest()
		if err != nil {
			return v1.Hash{}, err
		}
		if err := remote.WriteIndex(r, t, opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("push index %s: %w", ref, err)
		}
		return d, nil
	case v1.Image:
		d, err := t.Digest()
		if err != nil {
			return v1.Hash{}, err
		}
		if err := remote.Write(r, t, opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("push image %s: %w", ref, err)
		}
		return d, nil
	}
	return v1.Hash{}, fmt.Errorf("%w: push %s: %T is neither an image nor an index", ErrInvalidSpec, ref, x)
}

// ParseRef parses an image reference, marking loopback registries insecure
// (plain HTTP).
func ParseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: reference %q: %v", ErrInvalidSpec, ref, err)
	}
	if isLoopback(r.Context().RegistryStr()) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
