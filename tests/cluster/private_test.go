package cluster

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

// TestPrivateMultiPlatform: an image that is both private (the origin needs
// a login) and an index of two platforms. The controller builds the node's
// platform with the Pod's imagePullSecret; the Pod on the node starts
// lazily, its layer reads authenticated with the credentials the kubelet
// passes (soci's CRI keychain, as on a real node). kubectl, oras and crane
// show what was built.
func TestPrivateMultiPlatform(t *testing.T) {
	w := newWorldWith(t, harness.RegistryOptions{Htpasswd: harness.HtpasswdFile(t, "alice", "s3cret")}, true)
	specs := map[string]imagegen.Spec{"linux/amd64": small(10), "linux/arm64": small(11)}
	idx, err := imagegen.Index(specs)
	if err != nil {
		t.Fatal(err)
	}
	ref := w.origin.Host + "/private/multi:v1"
	if _, err := imagegen.Push(w.ctx, ref, idx, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	var amd64 image
	for _, m := range im.Manifests {
		if m.Platform.Architecture == "amd64" {
			img, err := idx.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			tree, err := imagegen.Tree(img)
			if err != nil {
				t.Fatal(err)
			}
			amd64 = image{ref: ref, img: img, tree: tree}
		}
	}
	amd64Digest, _ := amd64.img.Digest()

	cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{w.origin.Host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}}})
	if err := w.cl.Create(w.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "regcred"},
		Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: cfg}}); err != nil {
		t.Fatal(err)
	}
	w.policy(t, "private", `/private/`)
	trigger := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "trigger"}, Spec: corev1.PodSpec{
		NodeSelector:     map[string]string{"hermes.dev/trigger-only": "true"},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}},
		Containers:       []corev1.Container{{Name: "c", Image: ref}}}}
	if err := w.cl.Create(w.ctx, trigger); err != nil {
		t.Fatal(err)
	}
	st := w.waitReady(t, "private", 1)
	if st.Images[0].Digest != amd64Digest.String() || st.Images[0].Platform != "linux/amd64" {
		t.Fatalf("built %+v; want the amd64 manifest %s", st.Images[0], amd64Digest)
	}

	// (e) What users see.
	out := w.c.Kubectl(t, "get", "hp", "private")
	if !strings.Contains(out, "PAUSED") || !strings.Contains(out, "READY") || !strings.Contains(out, "BUILDING") || !strings.Contains(out, "FAILED") {
		t.Errorf("kubectl get hp:\n%s", out)
	}
	repo, _ := artifacts.Repository(ref)
	cache := w.ctl.RegistryHost + "/" + repo
	if out, err := harness.RunEnvErr(time.Minute, []string{"HOME=" + t.TempDir()}, harness.Bin(t, "oras"), "discover", "--plain-http", "--format", "json", cache+"@"+amd64Digest.String()); err != nil || !strings.Contains(out, st.Images[0].IndexDigest) {
		t.Errorf("oras discover: %v\n%s", err, out)
	}
	if out := harness.Run(t, time.Minute, harness.Bin(t, "crane"), "manifest", "--insecure", cache+"@"+st.Images[0].IndexDigest); !strings.Contains(out, artifacts.SOCIIndexV1) {
		t.Errorf("crane manifest of the index:\n%s", out)
	}
	if out := harness.Run(t, time.Minute, harness.Bin(t, "crane"), "manifest", "--insecure", cache+":v1"); !strings.Contains(out, "linux") || !strings.Contains(out, "arm64") {
		t.Errorf("crane manifest of the tag: want the image index\n%s", out)
	}

	// (c, f) The Pod on the node, with the pull secret.
	files := amd64.largest("random-", 1)
	pod := harness.HostPod("default", "app", workload(ref, files...))
	pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
	from := len(w.origin.Output())
	start := time.Now()
	if err := w.cl.Create(w.ctx, pod); err != nil {
		t.Fatal(err)
	}
	took := w.c.WaitPodReady(t, "default", "app", start, 3*time.Minute)
	t.Logf("private multi-platform Pod Ready in %s", took.Round(10*time.Millisecond))
	if got, want := w.logs(t, "default", "app"), amd64.want(t, files...); got != want {
		t.Fatalf("the container printed\n%s\nwant\n%s", got, want)
	}
	w.requireLazy(t, amd64, from, true)
	var ranged int64
	for _, r := range w.origin.Requests(from) {
		if r.Range && strings.Contains(r.Path, "/blobs/") {
			ranged += r.Bytes
		}
	}
	if ranged == 0 {
		t.Errorf("no range reads at the origin: the layers were not read lazily with the Pod's credentials")
	}
}
