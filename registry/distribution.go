package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/manifest/manifestlist"
	"github.com/distribution/distribution/v3/manifest/schema2"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/distribution/v3/registry/handlers"
	registrymiddleware "github.com/distribution/distribution/v3/registry/middleware/registry"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hermes-oci/hermes/registry/gc"
	"github.com/hermes-oci/hermes/registry/referrers"
)

// distribution builds its storage driver and namespace inside
// handlers.NewApp and keeps them private. Its registry-middleware hook is
// the one place that sees both, so Hermes registers a middleware under
// hookName (once per process: distribution's middleware table is global)
// and finds the App being built through an instance id in the options.
const hookName = "hermes-referrers"

var (
	hookOnce    sync.Once
	hookErr     error
	hookSeq     atomic.Uint64
	hookTargets sync.Map // instance id -> *hookTarget
)

// hookTarget receives what distribution's middleware hook is handed.
type hookTarget struct {
	inUse    *gc.InUse
	newStore func(storagedriver.StorageDriver, distribution.Namespace) referrers.Store
	driver   storagedriver.StorageDriver
	ns       distribution.Namespace
	store    referrers.Store
}

func hookInit(_ context.Context, ns distribution.Namespace, driver storagedriver.StorageDriver, options map[string]any) (distribution.Namespace, error) {
	id, _ := options["instance"].(string)
	v, ok := hookTargets.Load(id)
	if !ok {
		return nil, fmt.Errorf("%s: unknown instance %q", hookName, id)
	}
	t := v.(*hookTarget)
	t.driver, t.ns = driver, ns
	t.store = t.newStore(driver, ns)
	return &namespace{Namespace: ns, refs: t.store, driver: driver, inUse: t.inUse}, nil
}

// newApp builds distribution's App for dcfg with the referrer hook
// installed. handlers.NewApp panics on configuration errors (a bad storage
// section among them); they are returned as errors here.
func newApp(ctx context.Context, dcfg *configuration.Configuration, inUse *gc.InUse, newStore func(storagedriver.StorageDriver, distribution.Namespace) referrers.Store) (app *handlers.App, t *hookTarget, err error) {
	hookOnce.Do(func() { hookErr = registrymiddleware.Register(hookName, hookInit) })
	if hookErr != nil {
		return nil, nil, fmt.Errorf("register distribution middleware: %w", hookErr)
	}
	id := strconv.FormatUint(hookSeq.Add(1), 10)
	t = &hookTarget{newStore: newStore, inUse: inUse}
	hookTargets.Store(id, t)
	defer hookTargets.Delete(id)
	if dcfg.Middleware == nil {
		dcfg.Middleware = map[string][]configuration.Middleware{}
	}
	dcfg.Middleware["registry"] = append(dcfg.Middleware["registry"], configuration.Middleware{
		Name: hookName, Options: configuration.Parameters{"instance": id},
	})
	defer func() {
		if p := recover(); p != nil {
			app, t, err = nil, nil, fmt.Errorf("%w: %v", ErrConfig, p)
		}
	}()
	app = handlers.NewApp(ctx, dcfg)
	if t.store == nil {
		return nil, nil, fmt.Errorf("%w: distribution did not run the %s middleware", ErrConfig, hookName)
	}
	return app, t, nil
}

// namespace records referrers as distribution stores and deletes manifests.
type namespace struct {
	distribution.Namespace
	refs   referrers.Store
	driver storagedriver.StorageDriver
	inUse  *gc.InUse
}

func (n *namespace) Repository(ctx context.Context, name reference.Named) (distribution.Repository, error) {
	r, err := n.Namespace.Repository(ctx, name)
	if err != nil {
		return nil, err
	}
	return &repository{Repository: r, refs: n.refs, driver: n.driver, inUse: n.inUse}, nil
}

// Remove keeps distribution's optional RepositoryRemover reachable through
// the wrapper.
func (n *namespace) Remove(ctx context.Context, name reference.Named) error {
	if rr, ok := n.Namespace.(distribution.RepositoryRemover); ok {
		return rr.Remove(ctx, name)
	}
	return distribution.ErrUnsupported
}

type repository struct {
	distribution.Repository
	refs   referrers.Store
	driver storagedriver.StorageDriver
	inUse  *gc.InUse
}

func (r *repository) Blobs(ctx context.Context) distribution.BlobStore {
	return &blobs{BlobStore: r.Repository.Blobs(ctx), repo: r.Named().Name(), driver: r.driver}
}

func (r *repository) Manifests(ctx context.Context, options ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := r.Repository.Manifests(ctx, options...)
	if err != nil {
		return nil, err
	}
	mirrored := func() (distribution.ManifestService, error) {
		return r.Repository.Manifests(ctx, append(slices.Clip(options), storage.SkipLayerVerification())...)
	}
	return &manifests{ManifestService: ms, mirrored: mirrored, repo: r.Named().Name(), refs: r.refs, driver: r.driver, inUse: r.inUse}, nil
}

// manifests adds to distribution's manifest service:
//
//   - referrer bookkeeping: a manifest with a subject is recorded after
//     distribution stored it and before the client is answered, and
//     forgotten after it is deleted;
//   - mirrored images: an image manifest or index is stored without its
//     layers, config or child manifests (see isMirroredImage).
type manifests struct {
	distribution.ManifestService
	// mirrored returns distribution's manifest service for the same
	// repository with its own SkipLayerVerification option, which skips
	// the check that every blob and child manifest is in the repository.
	mirrored func() (distribution.ManifestService, error)
	repo     string
	refs     referrers.Store
	driver   storagedriver.StorageDriver
	inUse    *gc.InUse // told what a manifest names before distribution checks it is here
}

// isMirroredImage reports whether a manifest is the cache's copy of an
// image whose content lives upstream: an OCI or Docker image manifest or
// index with neither a subject nor an artifactType. Such a copy lets
// clients (oras discover, crane) resolve the subject of its referrers in
// the cache; what it references is fetched from the origin, and the cache
// answers a plain 404 for it. Referrers and artifacts are the cache's own
// content, so distribution still verifies that their blobs are here.
//
// distribution verifies references in its manifest handlers
// (registry/storage/*manifesthandler.go) unless the manifest service was
// made with storage.SkipLayerVerification, the per-request switch used
// here. validation.manifests.indexes.platforms "none" would be process-wide,
// for every index, and leaves image manifests checked.
func isMirroredImage(mediaType string, info *referrerInfo) bool {
	switch mediaType {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex:
		return info.subject == nil && info.ArtifactType == ""
	case schema2.MediaTypeManifest, manifestlist.MediaTypeManifestList:
		return true
	}
	return false
}

func (m *manifests) Put(ctx context.Context, man distribution.Manifest, options ...distribution.ManifestServiceOption) (digest.Digest, error) {
	mediaType, payload, err := man.Payload()
	if err != nil {
		return "", err
	}
	info, err := parseReferrer(mediaType, payload)
	if err != nil {
		return "", errcode.ErrorCodeManifestInvalid.WithDetail(err.Error())
	}
	if m.inUse != nil {
		// Before distribution verifies the references: the collector
		// either keeps them, or has deleted them and the PUT fails with
		// MANIFEST_BLOB_UNKNOWN, which a pusher retries.
		refs, _ := gc.References(payload) // a manifest distribution cannot parse is refused below
		m.inUse.Touch(digest.FromBytes(payload))
		m.inUse.Touch(refs.Blobs...)
		m.inUse.Touch(refs.Manifests...)
	}
	ms := m.ManifestService
	if isMirroredImage(mediaType, info) {
		if ms, err = m.mirrored(); err != nil {
			return "", err
		}
	}
	dgst, err := ms.Put(ctx, man, options...)
	if err != nil {
		return dgst, err
	}
	note, _ := ctx.Value(putNoteKey{}).(*putNote)
	name := dgst // the digest clients know the manifest by
	if note != nil && note.alias != "" {
		if err := linkAlias(ctx, m.driver, manifestLinkPath(m.repo, note.alias), dgst); err != nil {
			return "", err
		}
		name = note.alias
	}
	if info.subject == nil {
		return dgst, nil
	}
	desc := info.descriptor(mediaType, name, int64(len(payload)))
	if err := m.refs.Put(ctx, m.repo, info.subject.Digest, desc); err != nil {
		return "", fmt.Errorf("record referrer: %w", err)
	}
	if note != nil {
		note.subject.Store(info.subject.Digest)
	}
	return dgst, nil
}

func (m *manifests) Delete(ctx context.Context, dgst digest.Digest) error {
	var subject digest.Digest
	if man, err := m.ManifestService.Get(ctx, dgst); err == nil {
		if mediaType, payload, err := man.Payload(); err == nil {
			if info, err := parseReferrer(mediaType, payload); err == nil && info.subject != nil {
				subject = info.subject.Digest
			}
		}
	}
	if err := m.ManifestService.Delete(ctx, dgst); err != nil {
		return err
	}
	if subject != "" {
		if err := m.refs.Delete(ctx, m.repo, subject, dgst); err != nil {
			return fmt.Errorf("forget referrer: %w", err)
		}
	}
	return nil
}

// putNote carries the subject of a stored manifest from the manifest
// service back to the HTTP layer, which answers with OCI-Subject.
type putNote struct {
	subject atomic.Value  // digest.Digest, set by the manifest service
	alias   digest.Digest // the non-sha256 digest the manifest was PUT by
}

type putNoteKey struct{}

// referrerInfo is what the Referrers API needs from a manifest.
type referrerInfo struct {
	ArtifactType string              `json:"artifactType"`
	Config       *ocispec.Descriptor `json:"config"`
	Subject      json.RawMessage     `json:"subject"`
	Annotations  map[string]string   `json:"annotations"`
	subject      *ocispec.Descriptor
}

var errBadSubject = errors.New("invalid subject")

// parseReferrer reads the fields of an OCI manifest or index that make it
// a referrer. Other manifest types never have a subject.
func parseReferrer(mediaType string, payload []byte) (*referrerInfo, error) {
	var info referrerInfo
	if mediaType != ocispec.MediaTypeImageManifest && mediaType != ocispec.MediaTypeImageIndex {
		return &info, nil
	}
	if err := json.Unmarshal(payload, &info); err != nil {
		return nil, err
	}
	if len(info.Subject) == 0 || string(info.Subject) == "null" {
		return &info, nil
	}
	var s ocispec.Descriptor
	if err := json.Unmarshal(info.Subject, &s); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadSubject, err)
	}
	if err := s.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: digest %q: %w", errBadSubject, s.Digest, err)
	}
	if s.Size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", errBadSubject, s.Size)
	}
	info.subject = &s
	return &info, nil
}

// descriptor is the manifest's entry in its subject's referrers index. An
// image manifest without artifactType is typed by its config, as the
// distribution spec prescribes.
func (i *referrerInfo) descriptor(mediaType string, dgst digest.Digest, size int64) ocispec.Descriptor {
	at := i.ArtifactType
	if at == "" && mediaType == ocispec.MediaTypeImageManifest && i.Config != nil {
		at = i.Config.MediaType
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: dgst, Size: size, ArtifactType: at, Annotations: i.Annotations}
}

// existsFilter drops referrers whose manifest is no longer in the
// repository: deleted by another replica, or by distribution's offline
// garbage collector, which does not know about referrer sets.
func existsFilter(ns distribution.Namespace) referrers.Filter {
	return func(ctx context.Context, repo string, descs []ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if len(descs) == 0 {
			return descs, nil
		}
		named, err := reference.WithName(repo)
		if err != nil {
			return nil, err
		}
		r, err := ns.Repository(ctx, named)
		if err != nil {
			return nil, err
		}
		ms, err := r.Manifests(ctx)
		if err != nil {
			return nil, err
		}
		out := descs[:0:0]
		for _, d := range descs {
			ok, err := ms.Exists(ctx, d.Digest)
			if err != nil {
				return nil, fmt.Errorf("check referrer %s: %w", d.Digest, err)
			}
			if ok {
				out = append(out, d)
			}
		}
		return out, nil
	}
}
