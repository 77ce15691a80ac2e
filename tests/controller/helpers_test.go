package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// env is one test's world: an API server with Hermes' CRDs, an origin
// registry and a running controller.
type env struct {
	kube   *harness.Kube
	origin *harness.Registry
	ctl    *harness.Controller
	c      client.Client
	ctx    context.Context
}

func newEnv(t *testing.T, ctlArgs ...string) *env {
	t.Helper()
	return newEnvWith(t, harness.RegistryOptions{}, harness.ControllerOptions{Args: ctlArgs})
}

// newEnvWith is newEnv with an origin and a controller configured.
func newEnvWith(t *testing.T, origin harness.RegistryOptions, ctl harness.ControllerOptions) *env {
	t.Helper()
	e := newEnvWithout(t, origin)
	e.ctl = harness.StartController(t, e.kube, ctl)
	return e
}

// newEnvWithout is an env whose controllers the test starts itself
// (e.ctl is for the one the helpers talk to).
func newEnvWithout(t *testing.T, origin harness.RegistryOptions) *env {
	t.Helper()
	k := harness.StartKube(t)
	k.InstallCRDs(t)
	e := &env{kube: k, origin: harness.StartRegistry(t, origin), c: k.Client(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	e.ctx = ctx
	return e
}

// create creates obj, retrying what a fresh API server answers while it
// settles (429, a namespace not yet seen).
func (e *env) create(t *testing.T, obj client.Object) {
	t.Helper()
	harness.WaitFor(t, nil, 30*time.Second, "create "+obj.GetName(), func() error {
		err := e.c.Create(e.ctx, obj)
		if err != nil && !apierrors.IsTooManyRequests(err) && !apierrors.IsNotFound(err) && !apierrors.IsServerTimeout(err) {
			t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
		}
		return err
	})
}

func (e *env) namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	e.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
}

// pod creates a Pod that runs images (it stays Pending: no scheduler).
func (e *env) pod(t *testing.T, ns, name string, images []string, pullSecrets ...string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	for _, s := range pullSecrets {
		p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	e.create(t, p)
	return p
}

// policy creates a HermesPolicy indexing every layer of what regexes select.
func (e *env) policy(t *testing.T, name string, mod func(*v1alpha1.HermesPolicySpec), regexes ...string) *v1alpha1.HermesPolicy {
	t.Helper()
	p := &v1alpha1.HermesPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, r := range regexes {
		p.Spec.ImageSelectors = append(p.Spec.ImageSelectors, v1alpha1.ImageSelector{ImageRegex: r})
	}
	zero := mustQuantity("0")
	p.Spec.Build = &v1alpha1.BuildSettings{MinLayerSize: &zero}
	if mod != nil {
		mod(&p.Spec)
	}
	e.create(t, p)
	return p
}

// status waits until the policy's status satisfies ok and returns it.
func (e *env) status(t *testing.T, name string, timeout time.Duration, what string, ok func(v1alpha1.HermesPolicyStatus) error) v1alpha1.HermesPolicyStatus {
	t.Helper()
	var p v1alpha1.HermesPolicy
	var last error
	deadline := time.Now().Add(timeout)
	for {
		if err := e.c.Get(e.ctx, client.ObjectKey{Name: name}, &p); err != nil {
			last = err
		} else if last = ok(p.Status); last == nil {
			return p.Status
		}
		if ok, perr := e.ctl.Exited(); ok {
			t.Fatalf("hermes-controller exited while waiting for %s: %v", what, perr)
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(p.Status, "", "  ")
			t.Fatalf("policy %s: timed out after %s waiting for %s: %v\nstatus: %s", name, timeout, what, last, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readyCount is a status check: n images Ready, nothing else.
func readyCount(n int32) func(v1alpha1.HermesPolicyStatus) error {
	return func(s v1alpha1.HermesPolicyStatus) error {
		if s.Counts.Ready != n || s.Counts.Total != n {
			return fmt.Errorf("counts %+v, want %d ready of %d", s.Counts, n, n)
		}
		return nil
	}
}

// image pushes a small gzip image of layers random layers (256 KiB each,
// distinct per seed) to the origin as repo:tag and returns its reference
// and manifest digest.
func (e *env) image(t *testing.T, repoTag string, layers int, seed int64) (string, string) {
	t.Helper()
	ref, d, _ := pushImage(t, e.ctx, e.origin.Host, repoTag, layers, seed)
	return ref, d
}

// pushImage pushes a small gzip image to host as repo:tag and returns its
// reference, manifest digest and layer digests.
func pushImage(t *testing.T, ctx context.Context, host, repoTag string, layers int, seed int64) (string, string, []string) {
	t.Helper()
	spec := imagegen.Spec{}
	for i := 0; i < layers; i++ {
		spec.Layers = append(spec.Layers, imagegen.Layer{Kind: imagegen.Random, Size: 256 << 10, Files: 2, Seed: seed*100 + int64(i)})
	}
	img, err := imagegen.Image(spec)
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/" + repoTag
	d, err := imagegen.Push(ctx, ref, img)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for _, l := range ls {
		ld, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, ld.String())
	}
	return ref, d.String(), digests
}

// blobGets counts the successful GETs of each blob in the origin's access log.
func blobGets(origin *harness.Registry) map[string]int {
	out := map[string]int{}
	for _, r := range origin.Requests(0) {
		if i := strings.Index(r.Path, "/blobs/"); r.Method == "GET" && r.Status == 200 && i >= 0 {
			out[r.Path[i+len("/blobs/"):]]++
		}
	}
	return out
}

// referrers lists the SOCI indexes of manifest in the cache repository of
// image, through the registry's Referrers API.
func (e *env) referrers(t *testing.T, image, manifest string) []ocispec.Descriptor {
	t.Helper()
	repo, err := artifacts.Repository(image)
	if err != nil {
		t.Fatal(err)
	}
	return referrersAt(t, e.ctl.RegistryURL, repo, manifest, artifacts.SOCIIndexV1)
}

// referrersAt lists the referrers of subject of artifactType in the cache
// repository repo of the registry at url.
func referrersAt(t *testing.T, url, repo, subject, artifactType string) []ocispec.Descriptor {
	t.Helper()
	resp, err := http.Get(url + "/v2/" + repo + "/referrers/" + subject + "?artifactType=" + strings.ReplaceAll(artifactType, "+", "%2B"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var idx ocispec.Index
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("referrers of %s: %s %v", subject, resp.Status, err)
	}
	return idx.Manifests
}
