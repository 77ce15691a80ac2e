package controller

import (
	"fmt"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// TestTags: two tags of one digest are one build; a tag that moves gets the
// new digest built.
func TestTags(t *testing.T) {
	e := newEnv(t, "--resolve-ttl", "1s")
	v1, digest1 := e.image(t, "team/app:v1", 2, 1)
	stable, digestStable := e.image(t, "team/app:stable", 2, 1) // same content, same digest
	if digest1 != digestStable {
		t.Fatalf("setup: %s and %s differ", digest1, digestStable)
	}
	e.namespace(t, "ns", nil)
	e.policy(t, "apps", nil, `/team/app:`)
	e.pod(t, "ns", "a", []string{v1})
	e.pod(t, "ns", "b", []string{stable})
	st := e.status(t, "apps", 2*time.Minute, "both tags Ready", readyCount(2))
	if st.Images[0].IndexDigest != st.Images[1].IndexDigest || st.Images[0].Digest != digest1 {
		t.Fatalf("two tags of one digest: %+v", st.Images)
	}
	if n := harness.Metric(e.ctl.Metrics(t), `hermes_controller_builds_total{outcome="built"}`); n != 1 {
		t.Fatalf("builds = %v, want 1 for two tags of one digest", n)
	}

	// The tag moves; a new Pod (after the resolve TTL) sees the new digest.
	_, digest2 := e.image(t, "team/app:v1", 2, 2)
	time.Sleep(1100 * time.Millisecond)
	e.pod(t, "ns", "c", []string{v1})
	e.status(t, "apps", 2*time.Minute, "the moved tag built", func(s v1alpha1.HermesPolicyStatus) error {
		for _, im := range s.Images {
			if im.Image == v1 && im.Digest == digest2 && im.Phase == v1alpha1.PhaseReady {
				return nil
			}
		}
		return fmt.Errorf("no Ready %s@%s in %+v", v1, digest2, s.Images)
	})
	if n := harness.Metric(e.ctl.Metrics(t), `hermes_controller_builds_total{outcome="built"}`); n != 2 {
		t.Fatalf("builds = %v, want 2 after the tag moved", n)
	}
	if refs := e.referrers(t, v1, digest2); len(refs) != 1 {
		t.Fatalf("referrers of the new digest: %+v", refs)
	}
}

// TestManyPods: 500 Pods over 50 images in 5 namespaces are 50 builds:
// counted by the controller and in the origin's access log, where each
// layer is fetched once, the base layer all 50 images share included.
func TestManyPods(t *testing.T) {
	e := newEnv(t, "--build-concurrency", "4")
	var refs []string
	layers := map[string]bool{}
	base := imagegen.Layer{Kind: imagegen.Random, Size: 512 << 10, Files: 3, Seed: 999}
	for i := 0; i < 50; i++ {
		img, err := imagegen.Image(imagegen.Spec{Layers: []imagegen.Layer{base, {Kind: imagegen.Random, Size: 128 << 10, Files: 1, Seed: int64(1000 + i)}}})
		if err != nil {
			t.Fatal(err)
		}
		ref := e.origin.Host + fmt.Sprintf("/fleet/svc-%02d:v1", i)
		if _, err := imagegen.Push(e.ctx, ref, img); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
		ls, _ := img.Layers()
		for _, l := range ls {
			d, _ := l.Digest()
			layers[d.String()] = true
		}
	}
	if len(layers) != 51 {
		t.Fatalf("setup: %d distinct layers, want 51", len(layers))
	}
	for n := 0; n < 5; n++ {
		e.namespace(t, fmt.Sprintf("fleet-%d", n), nil)
	}
	e.policy(t, "fleet", nil, `/fleet/`)
	for i := 0; i < 500; i++ {
		e.pod(t, fmt.Sprintf("fleet-%d", i%5), fmt.Sprintf("pod-%03d", i), []string{refs[i%50]})
	}
	e.status(t, "fleet", 3*time.Minute, "50 images Ready", readyCount(50))
	if n := harness.Metric(e.ctl.Metrics(t), `hermes_controller_builds_total{outcome="built"}`); n != 50 {
		t.Errorf("builds = %v, want 50", n)
	}
	gets := blobGets(e.origin)
	for l := range layers {
		if gets[l] != 1 {
			t.Errorf("layer %s fetched %d times from the origin, want once", l, gets[l])
		}
	}
}
