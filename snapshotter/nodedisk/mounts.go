package nodedisk

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"

	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/awslabs/soci-snapshotter/snapshot"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// labelSnapshotRef names the committed snapshot a lazily mounted layer
// belongs to (containerd.io/snapshot.ref, kept in the labels soci mounts
// with).
const labelSnapshotRef = "containerd.io/snapshot.ref"

// Mounts is soci's filesystem with a record of its lazy (FUSE) mounts, so
// that the janitor can remount an idle layer to drop its spans. Give it to
// soci's snapshotter in place of the filesystem.
type Mounts struct {
	snapshot.FileSystem

	mu     sync.Mutex
	mounts map[string]map[string]string // mount point -> the labels it was mounted with
	// unmounted are layers a remount left unmounted (their mount failed).
	unmounted map[string]map[string]string
}

var _ snapshot.FileSystem = (*Mounts)(nil)

// TrackMounts wraps soci's filesystem.
func TrackMounts(fs snapshot.FileSystem) *Mounts {
	return &Mounts{FileSystem: fs, mounts: map[string]map[string]string{}}
}

// Mount implements snapshot.FileSystem.
func (m *Mounts) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	if err := m.FileSystem.Mount(ctx, mountpoint, labels); err != nil {
		return err
	}
	m.mu.Lock()
	m.mounts[mountpoint] = maps.Clone(labels)
	m.mu.Unlock()
	return nil
}

// Unmount implements snapshot.FileSystem.
func (m *Mounts) Unmount(ctx context.Context, mountpoint string) error {
	m.mu.Lock()
	delete(m.mounts, mountpoint)
	_, wasBroken := m.unmounted[mountpoint]
	delete(m.unmounted, mountpoint)
	m.mu.Unlock()
	if wasBroken {
		return nil // soci no longer knows it
	}
	return m.FileSystem.Unmount(ctx, mountpoint)
}

// Layer is one lazily mounted layer.
type Layer struct {
	Mountpoint string
	// Snapshot is the committed snapshot's name (its chain ID).
	Snapshot string
}

// Layers lists the lazily mounted layers, by mount point.
func (m *Mounts) Layers() []Layer {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Layer, 0, len(m.mounts))
	for mp, l := range m.mounts {
		out = append(out, Layer{Mountpoint: mp, Snapshot: l[labelSnapshotRef]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mountpoint < out[j].Mountpoint })
	return out
}

// Remount unmounts the layer at mountpoint and mounts it again with the
// same labels; soci then forgets its cached spans and removes their files,
// and fetches spans again when they are read. The caller makes sure that
// nothing uses the mount meanwhile. It first checks that the layer's
// registry answers, so that a layer is not left unmounted when it does not.
func (m *Mounts) Remount(ctx context.Context, mountpoint string) error {
	m.mu.Lock()
	labels, ok := m.mounts[mountpoint]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("remount %s: not a lazily mounted layer", mountpoint)
	}
	if ns := labels[source.TargetNamespace]; ns != "" {
		ctx = namespaces.WithNamespace(ctx, ns)
	}
	if err := m.FileSystem.Check(ctx, mountpoint, labels); err != nil {
		return fmt.Errorf("remount %s: registry check: %w", mountpoint, err)
	}
	if err := m.Unmount(ctx, mountpoint); err != nil {
		return fmt.Errorf("remount %s: unmount: %w", mountpoint, err)
	}
	var err error
	for try := 0; try < 3; try++ {
		if err = m.Mount(ctx, mountpoint, labels); err == nil {
			return nil
		}
	}
	// Keep the labels, so that the next pass tries again.
	m.mu.Lock()
	m.broken(mountpoint, labels)
	m.mu.Unlock()
	return fmt.Errorf("remount %s: mount: %w", mountpoint, err)
}

// broken records a layer that is unmounted and must be mounted again.
func (m *Mounts) broken(mountpoint string, labels map[string]string) {
	if m.unmounted == nil {
		m.unmounted = map[string]map[string]string{}
	}
	m.unmounted[mountpoint] = labels
}

// Repair mounts again the layers a failed remount left unmounted, and
// returns the errors of those that still fail.
func (m *Mounts) Repair(ctx context.Context) error {
	m.mu.Lock()
	todo := maps.Clone(m.unmounted)
	m.mu.Unlock()
	var errs []error
	for mp, labels := range todo {
		c := ctx
		if ns := labels[source.TargetNamespace]; ns != "" {
			c = namespaces.WithNamespace(ctx, ns)
		}
		if err := m.Mount(c, mp, labels); err != nil {
			errs = append(errs, fmt.Errorf("mount %s again: %w", mp, err))
			continue
		}
		m.mu.Lock()
		delete(m.unmounted, mp)
		m.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Unmounted counts the layers a failed remount left unmounted.
func (m *Mounts) Unmounted() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.unmounted)
}
