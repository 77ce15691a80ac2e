package snapshotter_test

import (
	"context"
	"testing"

	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	ctdsnapshotters "github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/hermes-oci/hermes/snapshotter"
	"github.com/hermes-oci/hermes/snapshotter/sourcetest"
	"github.com/opencontainers/go-digest"
)

// labelSpy stands in for soci's snapshotter and keeps the labels each
// Prepare arrives with; the real pairing is tested in tests/snapshotter.
type labelSpy struct {
	snapshots.Snapshotter
	labels  []map[string]string
	cleaned int
}

func (s *labelSpy) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	s.labels = append(s.labels, info.Labels)
	return nil, nil
}

func (s *labelSpy) Cleanup(context.Context) error { s.cleaned++; return nil }

func unpackLabels(ref, manifest, layer string) map[string]string {
	return map[string]string{
		snapshots.LabelSnapshotRef:                "chain",
		ctdsnapshotters.TargetRefLabel:            ref,
		ctdsnapshotters.TargetManifestDigestLabel: manifest,
		ctdsnapshotters.TargetLayerDigestLabel:    layer,
	}
}

func TestSnapshotterPrepare(t *testing.T) {
	ctx := context.Background()
	st := newSociStore(t)
	cache := sourcetest.NewMemory(snapshotter.SourceCache, st)
	imgLazy, sub := image("lazy")
	a := sourcetest.NewArtifact(t, sub, 1)
	cache.Publish(testRef, a)
	imgNone, _ := image("none")

	spy := &labelSpy{}
	sn := snapshotter.New(spy, snapshotter.NewResolver(snapshotter.ResolverOptions{}, cache), nil)

	cases := []struct {
		name      string
		labels    map[string]string
		wantIndex string
		wantRef   bool
	}{
		{"indexed layer", unpackLabels(testRef, imgLazy.Manifest.String(), a.Layers[0].String()), a.IndexDesc.Digest.String(), true},
		{"layer without a zTOC (soci unpacks it)", unpackLabels(testRef, imgLazy.Manifest.String(), digest.FromString("small").String()), a.IndexDesc.Digest.String(), true},
		{"no index", unpackLabels(testRef, imgNone.Manifest.String(), a.Layers[0].String()), "", false},
		{"no image labels (transfer service)", map[string]string{snapshots.LabelSnapshotRef: "chain"}, "", false},
		{"bad manifest digest", unpackLabels(testRef, "sha256:nope", a.Layers[0].String()), "", false},
		{"container layer", map[string]string{"containerd.io/gc.root": "x"}, "", false},
		{"puller's own index", func() map[string]string {
			l := unpackLabels(testRef, imgNone.Manifest.String(), a.Layers[0].String())
			l[source.TargetSociIndexDigestLabel] = "sha256:mine"
			return l
		}(), "sha256:mine", true},
	}
	for _, c := range cases {
		spy.labels = nil
		if _, err := sn.Prepare(ctx, "key", "", snapshots.WithLabels(c.labels)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := spy.labels[0]
		if got[source.TargetSociIndexDigestLabel] != c.wantIndex {
			t.Errorf("%s: index label %q, want %q", c.name, got[source.TargetSociIndexDigestLabel], c.wantIndex)
		}
		if _, ok := got[snapshots.LabelSnapshotRef]; ok != c.wantRef {
			t.Errorf("%s: snapshot.ref present=%v, want %v", c.name, ok, c.wantRef)
		}
		if got[ctdsnapshotters.TargetRefLabel] != c.labels[ctdsnapshotters.TargetRefLabel] {
			t.Errorf("%s: other labels changed: %v", c.name, got)
		}
	}
	if err := sn.Cleanup(ctx); err != nil || spy.cleaned != 1 {
		t.Errorf("Cleanup not forwarded: err=%v calls=%d", err, spy.cleaned)
	}
}
