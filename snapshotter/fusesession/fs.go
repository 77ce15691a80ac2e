package fusesession

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/awslabs/soci-snapshotter/fs/layer"
	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/awslabs/soci-snapshotter/idtools"
	"github.com/awslabs/soci-snapshotter/snapshot"
	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/go-logr/logr"
	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Fetcher reads the local content store (indexes and zTOCs).
type Fetcher interface {
	Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// FSOptions configure NewFS.
type FSOptions struct {
	// Root is the snapshotter's root; held mounts are parked below it.
	Root string
	// Soci is soci's own filesystem: local and parallel unpacks, id-mapped
	// mounts, image cleanup, and lazy mounts without an index label.
	Soci snapshot.FileSystem
	// Resolver resolves layers (soci's, sharing its span cache layout).
	Resolver   *layer.Resolver
	Store      Fetcher
	GetSources source.GetSources
	// FUSE cache timeouts, soci's [fuse] section.
	AttrTimeout, EntryTimeout, NegativeTimeout time.Duration
	DisableVerification                        bool
	Debug                                      bool
	// Holder keeps the mounts' connections; nil: mounts end with the
	// process.
	Holder *Client
	// DownSince is when the previous process went away (the holder's
	// hello), for the wait metrics.
	DownSince time.Time
	// Generation tags file handles; every start uses a new one.
	Generation uint64
	Metrics    *Metrics
}

// FS is soci's snapshot.FileSystem with lazy mounts served by Hermes so
// that they survive restarts (see the package doc).
type FS struct {
	o   FSOptions
	log logr.Logger

	mu       sync.Mutex
	mounts   map[string]*session // served, by mountpoint
	restored map[string]*session // taken over at start, not yet claimed by soci's restore
	handover atomic.Bool

	indexes     sync.Map // index digest -> map[layer digest]zTOC descriptor
	preresolved sync.Map // index digest -> struct{}
}

type session struct {
	state mountState
	layer layer.Layer
	srv   *fuse.Server
	park  string // where a taken-over mount waits for soci's restore
}

// mountState is what the holder keeps with a connection: enough for a
// later process to serve it again, and to tell it belongs to the snapshot
// soci restores.
type mountState struct {
	Mountpoint string            `json:"mountpoint"`
	Labels     map[string]string `json:"labels"`
	Init       []byte            `json:"init"` // the kernel's INIT message
	Generation uint64            `json:"generation"`
	Mounted    time.Time         `json:"mounted"`
}

// NewFS returns the filesystem; call Restore before soci's snapshotter
// restores its snapshots, and FinishRestore after.
func NewFS(ctx context.Context, o FSOptions) *FS {
	return &FS{o: o, log: logr.FromContextOrDiscard(ctx).WithName("fusesession"),
		mounts: map[string]*session{}, restored: map[string]*session{}}
}

var _ snapshot.FileSystem = (*FS)(nil)

// Handover makes Unmount leave lazy mounts to the next process: called
// when the snapshotter stops for a restart.
func (f *FS) Handover() { f.handover.Store(true) }

// Mount mounts the layer the labels name at mountpoint, or, during
// restore, puts back the taken-over mount of that snapshot.
func (f *FS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	if labels[source.TargetSociIndexDigestLabel] == "" {
		// soci discovers the index itself; its mount does not survive.
		return f.o.Soci.Mount(ctx, mountpoint, labels)
	}
	f.mu.Lock()
	s, ok := f.restored[mountpoint]
	delete(f.restored, mountpoint)
	f.mu.Unlock()
	if ok {
		switch {
		case !sameLayer(s.state.Labels, labels):
			f.refuse(s, "the held mount is of another layer than the snapshot")
		case s.park == "":
			// Gone from the mount table: the old connection serves its
			// remaining users, new ones get a new mount.
			f.log.Info("held mount was unmounted while the snapshotter was away; mounting the layer again", "mountpoint", mountpoint)
		default:
			if err := unpark(s.park, mountpoint); err != nil {
				f.refuse(s, err.Error())
				break
			}
			s.park = ""
			f.mu.Lock()
			f.mounts[mountpoint] = s
			f.mu.Unlock()
			return nil
		}
	}
	return f.mountNew(ctx, mountpoint, labels)
}

func sameLayer(a, b map[string]string) bool {
	for _, k := range []string{source.TargetSociIndexDigestLabel, "containerd.io/snapshot/cri.layer-digest"} {
		if a[k] != b[k] {
			return false
		}
	}
	return true
}

func (f *FS) mountNew(ctx context.Context, mountpoint string, labels map[string]string) error {
	l, err := f.resolve(ctx, labels)
	if err != nil {
		return err
	}
	raw, err := f.fuseFS(l)
	if err != nil {
		l.Done()
		return err
	}
	srv, dup, init, err := mountNew(mountpoint, raw, mountOptions(l.DisableXAttrs(), f.o.Debug))
	if err != nil {
		l.Done()
		return err
	}
	s := &session{layer: l, srv: srv, state: mountState{Mountpoint: mountpoint, Labels: labels, Init: init,
		Generation: f.o.Generation, Mounted: time.Now()}}
	go f.serve(s)
	if f.o.Holder != nil {
		b, _ := json.Marshal(s.state)
		if err := f.o.Holder.Put(mountpoint, b, dup); err != nil {
			f.log.Error(err, "the FUSE session holder did not take the mount: it will not survive a restart", "mountpoint", mountpoint)
		}
	}
	syscall.Close(dup)
	f.mu.Lock()
	f.mounts[mountpoint] = s
	f.mu.Unlock()
	return nil
}

// fuseFS is the layer's tree behind the translator.
func (f *FS) fuseFS(l layer.Layer) (fuse.RawFileSystem, error) {
	root, err := l.RootNode(0, idtools.IDMap{})
	if err != nil {
		return nil, fmt.Errorf("layer root: %w", err)
	}
	a, e, n := f.o.AttrTimeout, f.o.EntryTimeout, f.o.NegativeTimeout
	inner := fusefs.NewNodeFS(root, &fusefs.Options{AttrTimeout: &a, EntryTimeout: &e, NegativeTimeout: &n, NullPermissions: true})
	t := newTranslator(inner, root.EmbeddedInode(), f.o.Generation)
	if m := f.o.Metrics; m != nil {
		t.onReattach = func(kind string) { m.Reattached.WithLabelValues(kind).Inc() }
	}
	return t, nil
}

// serve runs a mount's server until its connection ends, then lets go of
// the layer.
func (f *FS) serve(s *session) {
	s.srv.Serve()
	s.layer.Done()
	f.o.Resolver.Evict(s.layer.GetCacheRefKey())
	f.mu.Lock()
	if f.mounts[s.state.Mountpoint] == s {
		delete(f.mounts, s.state.Mountpoint)
	}
	f.mu.Unlock()
}

// resolve finds the layer's zTOC in the index and resolves the layer.
func (f *FS) resolve(ctx context.Context, labels map[string]string) (layer.Layer, error) {
	if ns := labels[source.TargetNamespace]; ns != "" {
		if _, ok := namespaces.Namespace(ctx); !ok {
			ctx = namespaces.WithNamespace(ctx, ns)
		}
	}
	srcs, err := f.o.GetSources(labels)
	if err != nil {
		return nil, err
	}
	if len(srcs) == 0 {
		return nil, errors.New("no source for the layer")
	}
	idx := labels[source.TargetSociIndexDigestLabel]
	descs, err := f.index(ctx, idx)
	if err != nil {
		return nil, err
	}
	target := srcs[0].Target.Digest.String()
	ztocDesc, ok := descs[target]
	if !ok {
		return nil, fmt.Errorf("skipping mounting layer %s as FUSE mount: %w", target, snapshot.ErrNoZtoc)
	}
	var l layer.Layer
	for _, s := range srcs {
		if l, err = f.o.Resolver.Resolve(ctx, s.Hosts, s.Name, s.Target, ztocDesc, nil, f.o.DisableVerification, nil); err == nil {
			break
		}
		err = fmt.Errorf("resolving layer %s from %s: %w", s.Target.Digest, s.Name, err)
	}
	if err != nil {
		return nil, err
	}
	f.preresolve(ctx, idx, srcs[0], descs)
	return l, nil
}

// preresolve resolves the image's other lazy layers in the background, as
// soci's own Mount does: containerd prepares them one after the other.
func (f *FS) preresolve(ctx context.Context, idx string, src source.Source, descs map[string]ocispec.Descriptor) {
	if _, done := f.preresolved.LoadOrStore(idx, struct{}{}); done {
		return
	}
	ctx = context.WithoutCancel(ctx)
	go func() {
		for d, z := range descs {
			if d == src.Target.Digest.String() {
				continue
			}
			dg, err := digest.Parse(d)
			if err != nil {
				continue
			}
			if l, err := f.o.Resolver.Resolve(ctx, src.Hosts, src.Name, ocispec.Descriptor{Digest: dg}, z, nil, f.o.DisableVerification, nil); err == nil {
				l.Done()
			}
		}
	}()
}

// index returns the zTOC descriptors of a SOCI index in the local store,
// by layer digest.
func (f *FS) index(ctx context.Context, d string) (map[string]ocispec.Descriptor, error) {
	if v, ok := f.indexes.Load(d); ok {
		return v.(map[string]ocispec.Descriptor), nil
	}
	dg, err := digest.Parse(d)
	if err != nil {
		return nil, fmt.Errorf("SOCI index digest %q: %w", d, err)
	}
	rc, err := f.o.Store.Fetch(ctx, ocispec.Descriptor{Digest: dg})
	if err != nil {
		return nil, fmt.Errorf("SOCI index %s from the local store: %w", d, err)
	}
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	rc.Close()
	if err != nil {
		return nil, err
	}
	if digest.FromBytes(b) != dg {
		return nil, fmt.Errorf("SOCI index %s in the local store: mismatched digest", d)
	}
	var ix soci.Index
	if err := soci.UnmarshalIndex(b, &ix); err != nil {
		return nil, fmt.Errorf("SOCI index %s: %w", d, err)
	}
	m := map[string]ocispec.Descriptor{}
	for _, bl := range ix.Blobs {
		if bl.MediaType == soci.SociLayerMediaType {
			m[bl.Annotations[soci.IndexAnnotationImageLayerDigest]] = bl
		}
	}
	f.indexes.Store(d, m)
	return m, nil
}

// Check checks the layer's connection to its registry, refreshing it.
func (f *FS) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	f.mu.Lock()
	s, ok := f.mounts[mountpoint]
	f.mu.Unlock()
	if !ok {
		return f.o.Soci.Check(ctx, mountpoint, labels)
	}
	err := s.layer.Check()
	if err == nil {
		return nil
	}
	srcs, serr := f.o.GetSources(labels)
	if serr != nil {
		return errors.Join(err, serr)
	}
	for _, src := range srcs {
		if rerr := s.layer.Refresh(ctx, src.Hosts, src.Name, src.Target); rerr == nil {
			return nil
		} else {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// Unmount unmounts a lazy mount (not when handing over to the next
// process) and lets the holder close its connection.
func (f *FS) Unmount(ctx context.Context, mountpoint string) error {
	f.mu.Lock()
	_, ok := f.mounts[mountpoint]
	f.mu.Unlock()
	if !ok {
		return f.o.Soci.Unmount(ctx, mountpoint)
	}
	if f.handover.Load() {
		return nil
	}
	if f.o.Holder != nil {
		if err := f.o.Holder.Del(mountpoint); err != nil {
			f.log.Error(err, "the FUSE session holder did not let go of an unmounted layer", "mountpoint", mountpoint)
		}
	}
	if err := syscall.Unmount(mountpoint, 0); err != nil {
		if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", mountpoint, err)
		}
	}
	return nil
}

func (f *FS) MountLocal(ctx context.Context, mountpoint string, labels map[string]string, mounts []mount.Mount) error {
	return f.o.Soci.MountLocal(ctx, mountpoint, labels, mounts)
}

func (f *FS) MountParallel(ctx context.Context, mountpoint string, labels map[string]string, mounts []mount.Mount) error {
	return f.o.Soci.MountParallel(ctx, mountpoint, labels, mounts)
}

func (f *FS) IDMapMount(ctx context.Context, mountpoint, activeLayerID string, idmap idtools.IDMap) (string, error) {
	return f.o.Soci.IDMapMount(ctx, mountpoint, activeLayerID, idmap)
}

func (f *FS) IDMapMountLocal(ctx context.Context, mountpoint, activeLayerID string, idmap idtools.IDMap) (string, error) {
	return f.o.Soci.IDMapMountLocal(ctx, mountpoint, activeLayerID, idmap)
}

func (f *FS) CleanImage(ctx context.Context, digest string) error {
	return f.o.Soci.CleanImage(ctx, digest)
}

// Restore takes the held mounts over: serves each again (the requests
// waiting in the kernel are answered from here on, and those the previous
// process had read are resent), then parks it out of the way of soci's
// restore, which force-unmounts, and so would abort, every mount below
// its snapshots directory. It returns how many mounts it serves again.
func (f *FS) Restore(ctx context.Context) (int, error) {
	if f.o.Holder == nil {
		return 0, nil
	}
	start := time.Now()
	held, err := f.o.Holder.Take()
	if err != nil {
		return 0, err
	}
	n, waited := 0, 0
	for _, h := range held {
		s, w, err := f.take(ctx, h)
		if err != nil {
			f.log.Info("not serving a held mount again; it is unmounted and mounted anew if its snapshot still exists",
				"mountpoint", h.ID, "reason", err.Error())
			if f.o.Holder.Del(h.ID) == nil && f.o.Metrics != nil {
				f.o.Metrics.MountsRefused.Inc()
			}
			continue
		}
		n++
		waited += max(w, 0)
		f.mu.Lock()
		f.restored[h.ID] = s
		f.mu.Unlock()
	}
	took := time.Since(start)
	if n > 0 {
		down := time.Duration(0)
		if !f.o.DownSince.IsZero() {
			down = start.Sub(f.o.DownSince)
		}
		f.log.Info("serving lazily mounted layers of the previous process again", "mounts", n, "took", took.Round(time.Millisecond),
			"snapshotterWasDown", down.Round(time.Millisecond), "requestsThatWaited", waited)
		if m := f.o.Metrics; m != nil {
			m.RestartsSurvived.Inc()
			m.MountsRestored.Add(float64(n))
			m.RequestsWaited.Add(float64(waited))
			for range waited {
				m.Wait.Observe(down.Seconds())
			}
			m.RestoreSeconds.Set(took.Seconds())
		}
	}
	return n, nil
}

// take serves one held connection again and parks its mount. It returns
// how many requests were waiting.
func (f *FS) take(ctx context.Context, h Held) (*session, int, error) {
	var st mountState
	if err := json.Unmarshal(h.State, &st); err != nil || st.Mountpoint != h.ID || len(st.Init) == 0 {
		syscall.Close(h.FD)
		return nil, 0, fmt.Errorf("unreadable state: %v", err)
	}
	l, err := f.resolve(ctx, st.Labels)
	if err != nil {
		syscall.Close(h.FD)
		return nil, 0, err
	}
	raw, err := f.fuseFS(l)
	if err != nil {
		l.Done()
		syscall.Close(h.FD)
		return nil, 0, err
	}
	w := waiting(st.Mountpoint)
	srv, fd, err := attach(h.FD, st.Init, raw, mountOptions(l.DisableXAttrs(), f.o.Debug))
	if err != nil {
		l.Done()
		return nil, 0, err
	}
	s := &session{layer: l, srv: srv, state: st}
	go f.serve(s)
	if err := resend(fd); err != nil {
		f.log.Info("the kernel does not resend requests the previous process had read; those fail after the restart timeout", "err", err.Error())
	}
	// Park it: bind it elsewhere, then detach it from its mountpoint.
	if isMount(st.Mountpoint) {
		p := f.parkPath(st.Mountpoint)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return s, w, nil
		}
		if !isMount(p) {
			if err := syscall.Mount(st.Mountpoint, p, "", syscall.MS_BIND, ""); err != nil {
				return nil, 0, fmt.Errorf("parking %s: %w", st.Mountpoint, err)
			}
		}
		if err := syscall.Unmount(st.Mountpoint, syscall.MNT_DETACH); err != nil {
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
			return nil, 0, fmt.Errorf("parking %s: %w", st.Mountpoint, err)
		}
		s.park = p
	} else if p := f.parkPath(st.Mountpoint); isMount(p) {
		s.park = p // parked by a process that died before putting it back
	}
	return s, w, nil
}

func (f *FS) parkPath(mountpoint string) string {
	h := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(f.o.Root, "fusesession", "park", hex.EncodeToString(h[:8]))
}

func unpark(park, mountpoint string) error {
	if err := syscall.Mount(park, mountpoint, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("putting back %s: %w", mountpoint, err)
	}
	_ = syscall.Unmount(park, syscall.MNT_DETACH)
	_ = os.Remove(park)
	return nil
}

// FinishRestore lets go of taken-over mounts soci did not restore (their
// snapshot is gone): they serve their remaining users until those end.
func (f *FS) FinishRestore() {
	f.mu.Lock()
	left := f.restored
	f.restored = map[string]*session{}
	f.mu.Unlock()
	for _, s := range left {
		f.refuse(s, "soci did not restore its snapshot")
	}
}

// refuse stops offering a taken-over mount: new users cannot reach it;
// existing ones are served until they end.
func (f *FS) refuse(s *session, why string) {
	f.log.Info("not putting back a held mount", "mountpoint", s.state.Mountpoint, "reason", why)
	if f.o.Metrics != nil {
		f.o.Metrics.MountsRefused.Inc()
	}
	if f.o.Holder != nil {
		_ = f.o.Holder.Del(s.state.Mountpoint)
	}
	if s.park != "" {
		_ = syscall.Unmount(s.park, syscall.MNT_DETACH)
		_ = os.Remove(s.park)
	}
}

// NextGeneration reads, increments and stores the generation counter
// under root.
func NextGeneration(root string) (uint64, error) {
	p := filepath.Join(root, "fusesession", "generation")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return 0, err
	}
	var g uint64
	if b, err := os.ReadFile(p); err == nil {
		fmt.Sscan(string(b), &g)
	}
	g = (g + 1) & 0xffff
	if g == 0 {
		g = 1
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprint(g)), 0o600); err != nil {
		return 0, err
	}
	return g, os.Rename(tmp, p)
}
