package controller

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// pullSecret creates a kubernetes.io/dockerconfigjson Secret for host.
func (e *env) pullSecret(t *testing.T, ns, name, host, user, password string) *corev1.Secret {
	t.Helper()
	cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}}})
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: cfg}}
	e.create(t, s)
	return s
}

// TestPrivateImage: an image behind htpasswd is built with the Pod's
// imagePullSecret; with a wrong secret the image fails with a message that
// says so, is not retried in a storm, and is built once the secret is fixed.
func TestPrivateImage(t *testing.T) {
	e := newEnvWith(t, harness.RegistryOptions{Htpasswd: harness.HtpasswdFile(t, "alice", "s3cret")},
		harness.ControllerOptions{Args: []string{"--recheck-failed", "1s"}})
	ctx, origin := e.ctx, e.origin

	pushAuth := remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"})
	push := func(repoTag string, seed int64) string {
		img, err := imagegen.Image(imagegen.Spec{Layers: []imagegen.Layer{{Kind: imagegen.Random, Size: 256 << 10, Files: 2, Seed: seed}}})
		if err != nil {
			t.Fatal(err)
		}
		ref := origin.Host + "/" + repoTag
		if _, err := imagegen.Push(ctx, ref, img, pushAuth); err != nil {
			t.Fatal(err)
		}
		return ref
	}
	good, bad := push("private/good:v1", 1), push("private/bad:v1", 2)
	e.namespace(t, "ns", nil)
	e.pullSecret(t, "ns", "regcred", origin.Host, "alice", "s3cret")
	wrong := e.pullSecret(t, "ns", "wrongcred", origin.Host, "alice", "guess")
	e.policy(t, "private", nil, `/private/`)
	e.pod(t, "ns", "good", []string{good}, "regcred")
	e.pod(t, "ns", "bad", []string{bad}, "wrongcred")

	st := e.status(t, "private", 2*time.Minute, "good Ready, bad Failed", func(s v1alpha1.HermesPolicyStatus) error {
		if s.Counts.Ready != 1 || s.Counts.Failed != 1 {
			return fmt.Errorf("counts %+v", s.Counts)
		}
		return nil
	})
	for _, im := range st.Images {
		if im.Image == bad && (!strings.Contains(strings.ToLower(im.Message), "unauthorized") || im.Phase != v1alpha1.PhaseFailed) {
			t.Errorf("bad image status %+v; want Failed saying unauthorized", im)
		}
	}
	// No retry storm: the origin sees no more requests for the bad image
	// while nothing changes (the secrets are re-read every second).
	attempts := func() int {
		n := 0
		for _, line := range strings.Split(origin.Output(), "\n") {
			if (strings.Contains(line, `"GET /v2/private/bad/`) || strings.Contains(line, `"HEAD /v2/private/bad/`)) && strings.HasSuffix(line, `"hermes-controller"`) {
				n++
			}
		}
		return n
	}
	first := attempts()
	time.Sleep(5 * time.Second)
	if now := attempts(); now != first || first == 0 || first > 4 {
		t.Errorf("origin requests for the refused image: %d, then %d 5s later; want a few, then no more", first, now)
	}
	// The secret is fixed: the image is built without a Pod change.
	wrong.Data[corev1.DockerConfigJsonKey] = e.pullSecret(t, "ns", "fixed", origin.Host, "alice", "s3cret").Data[corev1.DockerConfigJsonKey]
	if err := e.c.Update(ctx, wrong); err != nil {
		t.Fatal(err)
	}
	e.status(t, "private", 2*time.Minute, "both Ready after the secret was fixed", readyCount(2))
}

// TestOriginFailures: an origin that answers 503 twice and then works
// gives Ready after backoff; an image the origin does not have fails once
// and is not retried.
func TestOriginFailures(t *testing.T) {
	e := newEnv(t)
	ctx, origin := e.ctx, e.origin
	proxy := harness.StartProxy(t, origin.URL)

	_, _, _ = pushImage(t, ctx, origin.Host, "flaky/app:v1", 1, 1)
	flaky := proxy.Host + "/flaky/app:v1"
	missing := proxy.Host + "/flaky/missing:v1"
	proxy.FailNext(http.StatusServiceUnavailable, 2, func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/v2/flaky/app/") })
	e.namespace(t, "ns", nil)
	e.policy(t, "flaky", nil, `/flaky/`)
	e.pod(t, "ns", "flaky", []string{flaky})
	e.pod(t, "ns", "missing", []string{missing})
	st := e.status(t, "flaky", 2*time.Minute, "flaky Ready, missing Failed", func(s v1alpha1.HermesPolicyStatus) error {
		if s.Counts.Ready != 1 || s.Counts.Failed != 1 {
			return fmt.Errorf("counts %+v", s.Counts)
		}
		return nil
	})
	injected := 0
	for _, r := range proxy.Requests() {
		if r.Injected {
			injected++
		}
	}
	if injected != 2 {
		t.Errorf("%d injected 503s were served, want 2", injected)
	}
	for _, im := range st.Images {
		if im.Image == missing && !strings.Contains(im.Message, "not found") {
			t.Errorf("missing image: %+v; want a message saying not found", im)
		}
	}
	missingRequests := func() int {
		n := 0
		for _, r := range proxy.Requests() {
			if strings.HasPrefix(r.Path, "/v2/flaky/missing/") {
				n++
			}
		}
		return n
	}
	first := missingRequests()
	time.Sleep(3 * time.Second)
	if now := missingRequests(); now != first || first == 0 {
		t.Errorf("requests for the missing image: %d, then %d; want some, then no retries", first, now)
	}
}

// TestKilledMidBuild: SIGKILL the controller while it builds; after the
// restart the build completes, and at no point did the cache list a
// referrer whose blobs were not all there.
func TestKilledMidBuild(t *testing.T) {
	e := newEnv(t)
	ctx, origin := e.ctx, e.origin
	proxy := harness.StartProxy(t, origin.URL)

	img, err := imagegen.Image(imagegen.Spec{Layers: []imagegen.Layer{
		{Kind: imagegen.Random, Size: 4 << 20, Files: 4, Seed: 1},
		{Kind: imagegen.Random, Size: 24 << 20, Files: 6, Seed: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagegen.Push(ctx, origin.Host+"/slow/app:v1", img); err != nil {
		t.Fatal(err)
	}
	ref := proxy.Host + "/slow/app:v1"
	manifest := strings.TrimSpace(harness.Run(t, time.Minute, harness.Bin(t, "crane"), "digest", "--insecure", ref))
	proxy.Throttle(2 << 20) // 2 MiB/s: the big layer takes ~12 s

	// Watch the cache all along: every listed index must have its blobs.
	var violations []string
	var checks atomic.Int32
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		repo, _ := artifacts.Repository(ref)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if v := checkReferrers(e.ctl.RegistryURL, repo, manifest); v != "" {
				mu.Lock()
				violations = append(violations, v)
				mu.Unlock()
			}
			checks.Add(1)
		}
	}()

	e.namespace(t, "ns", nil)
	e.policy(t, "slow", nil, `/slow/`)
	e.pod(t, "ns", "slow", []string{ref})
	e.status(t, "slow", time.Minute, "building with progress", func(s v1alpha1.HermesPolicyStatus) error {
		if len(s.Images) != 1 || s.Images[0].Phase != v1alpha1.PhaseBuilding || s.Images[0].Progress == nil || s.Images[0].Progress.BytesDone == 0 {
			return fmt.Errorf("images %+v", s.Images)
		}
		return nil
	})
	e.ctl.Restart(t, true) // SIGKILL, then start again
	proxy.Throttle(0)
	st := e.status(t, "slow", 2*time.Minute, "Ready after the restart", readyCount(1))
	close(stop)
	<-done
	if len(violations) > 0 {
		t.Fatalf("the cache listed incomplete indexes: %v", violations)
	}
	if checks.Load() < 10 {
		t.Fatalf("only %d checks of the cache ran", checks.Load())
	}
	if v := checkReferrers(e.ctl.RegistryURL, mustRepo(t, ref), manifest); v != "" {
		t.Fatal(v)
	}
	if st.Images[0].IndexDigest == "" {
		t.Fatal("no index digest")
	}
}

func mustRepo(t *testing.T, ref string) string {
	t.Helper()
	r, err := artifacts.Repository(ref)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkReferrers returns what is wrong with the indexes the cache lists for
// manifest: a listed index or one of its blobs that is not there. A cache
// that does not answer (restarting) is not a violation.
func checkReferrers(cacheURL, repo, manifest string) string {
	resp, err := http.Get(cacheURL + "/v2/" + repo + "/referrers/" + manifest)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	var idx ocispec.Index
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
		return "referrers: " + err.Error()
	}
	for _, d := range idx.Manifests {
		req, _ := http.NewRequest(http.MethodGet, cacheURL+"/v2/"+repo+"/manifests/"+d.Digest.String(), nil)
		req.Header.Set("Accept", ocispec.MediaTypeImageManifest) // distribution hides OCI manifests from clients that do not accept them
		mresp, err := http.DefaultClient.Do(req)
		if err != nil {
			return ""
		}
		var m ocispec.Manifest
		err = json.NewDecoder(mresp.Body).Decode(&m)
		mresp.Body.Close()
		if mresp.StatusCode != http.StatusOK || err != nil {
			return fmt.Sprintf("listed index %s: %s %v", d.Digest, mresp.Status, err)
		}
		for _, b := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
			req, _ := http.NewRequest(http.MethodHead, cacheURL+"/v2/"+repo+"/blobs/"+b.Digest.String(), nil)
			bresp, err := http.DefaultClient.Do(req)
			if err != nil {
				return ""
			}
			bresp.Body.Close()
			if bresp.StatusCode != http.StatusOK {
				return fmt.Sprintf("index %s lists blob %s: %s", d.Digest, b.Digest, bresp.Status)
			}
		}
	}
	return ""
}

var _ client.Object = (*corev1.Secret)(nil)
