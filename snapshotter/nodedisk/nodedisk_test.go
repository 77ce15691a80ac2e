package nodedisk

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/native"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// putBlob writes b into the layout's local store and returns its digest.
func putBlob(t *testing.T, l Layout, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	if err := os.MkdirAll(l.Blobs(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.Blobs(), d.Encoded()), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// Clean removes the span cache, the file-tree store, half-written blobs and
// blobs whose bytes are not their digest, and keeps good blobs.
func TestClean(t *testing.T) {
	l := Layout{Root: t.TempDir()}
	good := putBlob(t, l, []byte("a zTOC"))
	bad := digest.FromString("what was meant to be written")
	if err := os.WriteFile(filepath.Join(l.Blobs(), bad.Encoded()), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(l.SpanCache(), "123", "0"), filepath.Join(l.SpanCache(), "123", "wip", "1-x"),
		l.MetadataDB(), filepath.Join(l.MetadataDir(), "layer.db"), filepath.Join(l.Ingest(), "sha256_x")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, 8192), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Clean(l)
	if err != nil {
		t.Fatal(err)
	}
	if rep.SpanDirs != 1 || rep.SpanBytes < 8192 || rep.MetadataBytes < 16384 || rep.Ingest != 1 || len(rep.Corrupt) != 1 || rep.Corrupt[0] != bad {
		t.Errorf("report %+v", rep)
	}
	for _, p := range []string{l.SpanCache(), l.MetadataDB(), l.MetadataDir(), filepath.Join(l.Ingest(), "sha256_x"), filepath.Join(l.Blobs(), bad.Encoded())} {
		if exists(p) {
			t.Errorf("%s survived", p)
		}
	}
	if !exists(filepath.Join(l.Blobs(), good.Encoded())) {
		t.Error("a good blob was removed")
	}
	if u := l.Usage(); u[KindSpans] != 0 || u[KindMetadata] != 0 || u[KindContent] == 0 {
		t.Errorf("usage after clean %v", u)
	}
	// On an empty root, nothing to do and no error.
	if _, err := Clean(Layout{Root: t.TempDir()}); err != nil {
		t.Error(err)
	}
}

// index writes a SOCI v1 index over ztocs into the store.
func index(t *testing.T, l Layout, ztocs ...digest.Digest) digest.Digest {
	t.Helper()
	cfg := putBlob(t, l, []byte("{}"))
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: soci.SociIndexArtifactTypeV1, Digest: cfg, Size: 2}}
	m.SchemaVersion = 2
	for _, z := range ztocs {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: soci.SociLayerMediaType, Digest: z})
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return putBlob(t, l, b)
}

// Content GC keeps the indexes that snapshots name and their zTOCs, removes
// the rest, and tells Forget what went. The snapshots are a real
// (containerd native) snapshotter's.
func TestContentGC(t *testing.T) {
	ctx := context.Background()
	l := Layout{Root: t.TempDir()}
	sn, err := native.NewSnapshotter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()

	z1, z2, z3 := putBlob(t, l, []byte("ztoc 1")), putBlob(t, l, []byte("ztoc 2")), putBlob(t, l, []byte("ztoc 3"))
	kept := index(t, l, z1, z2)
	gone := index(t, l, z2, z3) // shares z2 with the kept one
	layer := putBlob(t, l, []byte("a whole layer soci unpacked"))

	label := snapshots.WithLabels(map[string]string{source.TargetSociIndexDigestLabel: kept.String()})
	if _, err := sn.Prepare(ctx, "extract", "", label); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "layer1", "extract", label); err != nil {
		t.Fatal(err)
	}
	var forgot map[digest.Digest]bool
	j := New(Options{Layout: l, Snapshots: sn, ContentGC: true, Forget: func(m map[digest.Digest]bool) { forgot = m }})
	rep, err := j.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{kept, z1, z2} {
		if !exists(filepath.Join(l.Blobs(), d.Encoded())) {
			t.Errorf("%s removed, still needed", d)
		}
	}
	for _, d := range []digest.Digest{gone, z3, layer} {
		if exists(filepath.Join(l.Blobs(), d.Encoded())) {
			t.Errorf("%s kept, no snapshot needs it", d)
		}
		if !forgot[d] {
			t.Errorf("Forget not told of %s", d)
		}
	}
	if rep.Blobs != 3 || rep.BlobBytes == 0 {
		t.Errorf("report %+v", rep)
	}

	// The image goes: everything goes.
	if err := sn.Remove(ctx, "layer1"); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(l.Blobs()); len(ents) != 0 {
		t.Errorf("%d blobs left after the last snapshot went", len(ents))
	}
}

// An active snapshot or a view keeps every layer below it in use.
func TestUsedLayers(t *testing.T) {
	infos := map[string]snapshots.Info{
		"l1": {Name: "l1", Kind: snapshots.KindCommitted},
		"l2": {Name: "l2", Parent: "l1", Kind: snapshots.KindCommitted},
		"l3": {Name: "l3", Parent: "l2", Kind: snapshots.KindCommitted},
		"o1": {Name: "o1", Kind: snapshots.KindCommitted},
		"c":  {Name: "c", Parent: "l2", Kind: snapshots.KindActive},
		"v":  {Name: "v", Parent: "l1", Kind: snapshots.KindView},
	}
	used := usedLayers(infos)
	if !used["l1"] || !used["l2"] || used["l3"] || used["o1"] || len(used) != 2 {
		t.Errorf("used %v, want l1 and l2", used)
	}
}
