package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containerd/platforms"
	"github.com/go-logr/logr"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"k8s.io/client-go/util/workqueue"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller/builder"
)

// workers run the two queues: resolve (image references to manifest
// digests) and build. Both deduplicate keys and never drop one: a key is
// done, retried with backoff, or recorded as failed for good.
type workers struct {
	opts    Options
	t       *tracker
	b       builder.Interface
	creds   credentialSource
	gens    func() map[string]int64 // policy generations now
	events  *events
	metrics *metrics
	// usage, if set, records that a build's manifest is in use before the
	// build pushes anything (artifact garbage collection).
	usage func(context.Context, Key) error

	resolveLimiter workqueue.TypedRateLimiter[ImageKey]
	buildLimiter   workqueue.TypedRateLimiter[Key]
	resolveQ       workqueue.TypedRateLimitingInterface[ImageKey]
	buildQ         workqueue.TypedRateLimitingInterface[Key]
}

func newWorkers(o Options, t *tracker, b builder.Interface, creds credentialSource, gens func() map[string]int64) *workers {
	w := &workers{opts: o, t: t, b: b, creds: creds, gens: gens,
		resolveLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[ImageKey](o.RetryBase, o.RetryMax),
		buildLimiter:   workqueue.NewTypedItemExponentialFailureRateLimiter[Key](o.RetryBase, o.RetryMax),
	}
	w.resolveQ = workqueue.NewTypedRateLimitingQueueWithConfig(w.resolveLimiter, workqueue.TypedRateLimitingQueueConfig[ImageKey]{Name: "hermes_resolve"})
	w.buildQ = workqueue.NewTypedRateLimitingQueueWithConfig(w.buildLimiter, workqueue.TypedRateLimitingQueueConfig[Key]{Name: "hermes_build"})
	return w
}

func (w *workers) depth() (int, int) { return w.resolveQ.Len(), w.buildQ.Len() }

// NeedLeaderElection: only the leader resolves and builds.
func (w *workers) NeedLeaderElection() bool { return true }

// Start runs the workers until ctx ends; builds in flight are cancelled.
func (w *workers) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("workers")
	ctx = logr.NewContext(ctx, log)
	var wg sync.WaitGroup
	for i := 0; i < w.opts.ResolveWorkers; i++ {
		wg.Go(func() {
			for w.next(ctx, w.resolveQ, w.resolve) {
			}
		})
	}
	for i := 0; i < w.opts.BuildConcurrency; i++ {
		wg.Go(func() {
			for w.nextBuild(ctx) {
			}
		})
	}
	// Tags move: every image is resolved again now and then. Images that
	// failed for good are looked at more often: their pull secrets may
	// have been fixed (Secrets are not watched), which costs a Secret read,
	// never a request to the image's registry unless they changed.
	wg.Go(func() {
		resync := time.NewTicker(w.opts.Resync)
		defer resync.Stop()
		recheck := time.NewTicker(w.opts.RecheckFailed)
		defer recheck.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-resync.C:
				for _, k := range w.t.allImages() {
					w.resolveQ.Add(k)
				}
			case <-recheck.C:
				for _, k := range w.t.failedImages() {
					w.resolveQ.Add(k)
				}
			}
		}
	})
	log.Info("workers started", "resolveWorkers", w.opts.ResolveWorkers, "buildConcurrency", w.opts.BuildConcurrency, "buildTimeout", w.opts.BuildTimeout)
	<-ctx.Done()
	w.resolveQ.ShutDown()
	w.buildQ.ShutDown()
	wg.Wait()
	return nil
}

func (w *workers) next(ctx context.Context, q workqueue.TypedRateLimitingInterface[ImageKey], fn func(context.Context, ImageKey)) bool {
	k, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(k)
	fn(ctx, k)
	return true
}

func (w *workers) nextBuild(ctx context.Context) bool {
	k, shutdown := w.buildQ.Get()
	if shutdown {
		return false
	}
	defer w.buildQ.Done(k)
	w.build(ctx, k)
	return true
}

// enqueue asks for images to be resolved (and built if need be).
func (w *workers) enqueue(keys ...ImageKey) {
	for _, k := range keys {
		w.resolveQ.Add(k)
	}
}

// resolve turns an image reference into its build key, and queues the
// build unless it is done or failed for good with the same credentials and
// policies.
func (w *workers) resolve(ctx context.Context, k ImageKey) {
	log := logr.FromContextOrDiscard(ctx).WithValues("image", k.Image, "platform", k.Platform)
	sources, known, resolvedAt, failedFP, ok := w.t.image(k)
	if !ok {
		w.resolveQ.Forget(k)
		return // no Pod wants it any more
	}
	creds, err := w.creds.credentials(ctx, sources, k.Image)
	if err != nil {
		w.resolveRetry(ctx, k, fmt.Errorf("pull credentials: %w", err))
		return
	}
	gen := w.t.generationOf(k, w.gens())
	if failedFP != "" && !shouldRetry(failedFP, w.t.imageFailedAt(k), creds.fingerprint, gen) {
		w.resolveQ.Forget(k)
		return // failed for good; nothing changed since
	}
	digestRef := strings.Contains(k.Image, "@")
	if known != nil && (digestRef || w.opts.Now().Sub(resolvedAt) < w.opts.ResolveTTL) {
		if w.t.linked(k, *known, "", creds, gen) {
			w.buildQ.Add(*known)
		}
		w.resolveQ.Forget(k)
		w.publish(ctx, *known)
		return
	}
	plat, err := platforms.Parse(k.Platform)
	if err != nil {
		w.t.imageFailed(k, creds.fingerprint, gen, fmt.Errorf("platform %q: %w", k.Platform, err))
		return
	}
	rctx, cancel := context.WithTimeout(ctx, w.opts.ResolveTimeout)
	res, err := w.b.Resolve(rctx, builder.Request{Image: k.Image, Platforms: []ocispec.Platform{plat}, OriginCredentials: creds.fn})
	cancel()
	switch {
	case ctx.Err() != nil:
		return // shutting down
	case err != nil && builder.Retryable(err):
		w.resolveRetry(ctx, k, err)
		return
	case err != nil:
		w.metrics.resolves.WithLabelValues("failed").Inc()
		log.Info("image cannot be resolved; not retried until its policy or pull secrets change", "err", err)
		w.t.imageFailed(k, creds.fingerprint, gen, err)
		w.resolveQ.Forget(k)
		for _, p := range w.t.policiesOf(k) {
			w.events.warning(p, "ResolveFailed", "%s (%s): %v", k.Image, k.Platform, err)
		}
		return
	}
	w.metrics.resolves.WithLabelValues("ok").Inc()
	w.resolveQ.Forget(k)
	bk := Key{Repository: imageRepository(res.Reference), Manifest: res.Platforms[0].Manifest.Digest, Platform: k.Platform, Settings: k.Settings}
	if known != nil && *known != bk {
		log.Info("tag moved: building the new manifest", "from", known.Manifest, "to", bk.Manifest)
	}
	if w.t.linked(k, bk, res.Digest, creds, gen) {
		w.buildQ.Add(bk)
	}
	w.publish(ctx, bk)
}

// publish stores the tags that lead to a Ready build in the cache, so
// `oras discover <cache>/<repo>:<tag>` finds the index. Failures are
// logged: nodes never use tags from the cache.
func (w *workers) publish(ctx context.Context, k Key) {
	for _, p := range w.t.toPublish(k) {
		pctx, cancel := context.WithTimeout(ctx, w.opts.ResolveTimeout)
		err := w.b.Publish(pctx, builder.Request{Image: p.ref, OriginCredentials: p.creds.fn})
		cancel()
		if err != nil {
			logr.FromContextOrDiscard(ctx).Info("tag not stored in the cache (inspection only; nodes do not need it)", "image", p.ref, "err", err)
			continue
		}
		w.t.published(p.image, p.top)
	}
}

func (w *workers) resolveRetry(ctx context.Context, k ImageKey, err error) {
	w.metrics.resolves.WithLabelValues("retry").Inc()
	after := w.resolveLimiter.When(k)
	logr.FromContextOrDiscard(ctx).Info("resolving an image failed; retrying", "image", k.Image, "platform", k.Platform, "after", after, "err", err)
	w.t.imageRetrying(k, err, after)
	w.resolveQ.AddAfter(k, after)
}

// build runs one build.
func (w *workers) build(ctx context.Context, k Key) {
	log := logr.FromContextOrDiscard(ctx).WithValues("image", k.Image(), "platform", k.Platform)
	creds, ok := w.t.startBuild(k)
	if !ok {
		w.buildQ.Forget(k)
		return
	}
	if w.usage != nil {
		if err := w.usage(ctx, k); err != nil {
			if ctx.Err() != nil {
				w.t.buildDone(k, v1alpha1.PhasePending, "", "interrupted: the controller stopped", w.gens())
				return
			}
			after := w.buildLimiter.When(k)
			log.Info("usage record not written; the build waits for it", "after", after, "err", err)
			w.t.buildDone(k, v1alpha1.PhasePending, "", fmt.Sprintf("retrying in %s: usage record: %v", after.Round(time.Second), err), w.gens())
			w.buildQ.AddAfter(k, after)
			return
		}
	}
	plat, _ := platforms.Parse(k.Platform) // parsed when it was resolved
	start := w.opts.Now()
	bctx, cancel := context.WithTimeout(ctx, w.opts.BuildTimeout)
	var read int64
	var readMu sync.Mutex
	res, err := w.b.Build(bctx, builder.Request{
		Image: k.Image(), Platforms: []ocispec.Platform{plat}, Settings: k.Settings, OriginCredentials: creds.fn,
		Progress: func(p builder.Progress) {
			finished := p.State == builder.LayerBuilt || p.State == builder.LayerSkipped || p.State == builder.LayerFailed
			w.t.progress(k, p.Layer, p.Layers, p.Size, p.Done, finished)
			if p.State == builder.LayerBuilt && p.Done > 0 {
				readMu.Lock()
				read += p.Done
				readMu.Unlock()
			}
		},
	})
	cancel()
	took := w.opts.Now().Sub(start)
	gens := w.gens()
	switch {
	case ctx.Err() != nil:
		// Shutting down: the next leader (or this one, restarted) builds
		// it again; nothing half-built is ever visible.
		w.t.buildDone(k, v1alpha1.PhasePending, "", "interrupted: the controller stopped", gens)
		return
	case err != nil && builder.Retryable(err):
		after := w.buildLimiter.When(k)
		if errors.Is(err, builder.ErrCancelled) && bctx.Err() != nil {
			err = fmt.Errorf("not done within the build timeout of %s: %w", w.opts.BuildTimeout, err)
		}
		w.metrics.build(outcomeRetry, took, read)
		log.Info("build failed; retrying", "after", after, "err", err)
		w.t.buildDone(k, v1alpha1.PhasePending, "", fmt.Sprintf("retrying in %s: %v", after.Round(time.Second), err), gens)
		w.buildQ.AddAfter(k, after)
		return
	case err != nil:
		w.metrics.build(outcomeFailed, took, read)
		log.Info("build failed; not retried until its policy or pull secrets change", "err", err)
		for _, p := range w.t.buildDone(k, v1alpha1.PhaseFailed, "", err.Error(), gens) {
			w.events.warning(p, "BuildFailed", "%s (%s): %v", k.Image(), k.Platform, err)
		}
		w.buildQ.Forget(k)
		return
	}
	w.buildQ.Forget(k)
	p := res.Platforms[0]
	switch {
	case p.Index == nil:
		w.metrics.build(outcomeSkipped, took, read)
		msg := fmt.Sprintf("no layer of at least %d bytes to index", k.Settings.MinLayerSize)
		for _, pol := range w.t.buildDone(k, v1alpha1.PhaseSkipped, "", msg, gens) {
			w.events.normal(pol, "Skipped", "%s (%s): %s", k.Image(), k.Platform, msg)
		}
	case p.Existed:
		w.metrics.build(outcomeExisted, took, 0)
		log.V(1).Info("index already in the cache", "index", p.Index.Digest)
		w.t.buildDone(k, v1alpha1.PhaseReady, p.Index.Digest, "", gens)
	default:
		w.metrics.build(outcomeBuilt, took, read)
		indexed := 0
		for _, l := range p.Layers {
			if l.State == builder.LayerBuilt {
				indexed++
			}
		}
		log.Info("built", "index", p.Index.Digest, "layers", len(p.Layers), "indexed", indexed, "read", read, "took", took)
		for _, pol := range w.t.buildDone(k, v1alpha1.PhaseReady, p.Index.Digest, "", gens) {
			w.events.normal(pol, "Built", "SOCI index %s of %s (%s): %d of %d layers indexed, %d MB read in %s",
				p.Index.Digest, k.Image(), k.Platform, indexed, len(p.Layers), read/1e6, took.Round(100*time.Millisecond))
		}
	}
	for _, warn := range p.Warnings {
		log.Info("build warning", "warning", warn)
	}
	w.publish(ctx, k)
}
