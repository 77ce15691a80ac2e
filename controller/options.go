package controller

import (
	"fmt"
	"runtime"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/controller/builder"
	"github.com/hermes-oci/hermes/registry/artifacts"
)

// Options configure the controller. Zero values mean the defaults below.
type Options struct {
	// Builder builds into the cache registry. Required.
	Builder builder.Interface
	// Platforms a policy without spec.platforms indexes; default the
	// controller's own (runtime.GOOS/GOARCH).
	Platforms []ocispec.Platform
	// Settings a policy's spec.build is applied to; default
	// builder.DefaultSettings().
	Settings *builder.Settings
	// BuildConcurrency bounds builds at once (default 2); each build also
	// bounds its layers in flight (the builder's Concurrency).
	BuildConcurrency int
	// BuildTimeout bounds one build (default 1h); a build cut short is
	// retried.
	BuildTimeout time.Duration
	// ResolveWorkers resolve image references at once (default 8).
	ResolveWorkers int
	// ResolveTimeout bounds one resolution (default 1m).
	ResolveTimeout time.Duration
	// ResolveTTL is how long a tag's resolution is trusted before it is
	// resolved again on the next Pod change (default 1m); digests never
	// change.
	ResolveTTL time.Duration
	// Resync resolves every wanted image again this often, so tags that
	// move are noticed without Pod changes (default 10m).
	Resync time.Duration
	// RecheckFailed is how often images that failed for good have their
	// pull credentials read again, to retry once they change (default 1m).
	RecheckFailed time.Duration
	// RetryBase and RetryMax bound the exponential backoff of retryable
	// failures (default 1s and 5m).
	RetryBase, RetryMax time.Duration
	// StatusInterval is the least time between two status writes of one
	// policy (default 2s).
	StatusInterval time.Duration
	// CredentialsTTL is how long a Pod's pull secrets, once read, are
	// used before they are read again (default 30s).
	CredentialsTTL time.Duration
	// Cache is the cache registry with a write credential, for artifact
	// garbage collection; nil disables it.
	Cache *artifacts.Cache
	// GCInterval is how often artifacts are collected (default 10m).
	GCInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.Builder == nil {
		return o, fmt.Errorf("controller: no builder")
	}
	if len(o.Platforms) == 0 {
		o.Platforms = []ocispec.Platform{{OS: "linux", Architecture: runtime.GOARCH}}
	}
	if o.Settings == nil {
		s := builder.DefaultSettings()
		o.Settings = &s
	}
	if err := o.Settings.Validate(); err != nil {
		return o, fmt.Errorf("controller: default build settings: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.BuildTimeout, time.Hour)
	def(&o.ResolveTimeout, time.Minute)
	def(&o.ResolveTTL, time.Minute)
	def(&o.Resync, 10*time.Minute)
	def(&o.RecheckFailed, time.Minute)
	def(&o.RetryBase, time.Second)
	def(&o.RetryMax, 5*time.Minute)
	def(&o.StatusInterval, 2*time.Second)
	def(&o.CredentialsTTL, 30*time.Second)
	def(&o.GCInterval, 10*time.Minute)
	if o.BuildConcurrency <= 0 {
		o.BuildConcurrency = 2
	}
	if o.ResolveWorkers <= 0 {
		o.ResolveWorkers = 8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}
