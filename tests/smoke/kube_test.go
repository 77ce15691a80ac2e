package smoke

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hermes-oci/hermes/tests/harness"
)

// TestKubeAPIServer creates an object with client-go against a real
// kube-apiserver + etcd and reads it back with client-go and kubectl.
func TestKubeAPIServer(t *testing.T) {
	k := harness.StartKube(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: "default"},
		Data:       map[string]string{"greeting": "hello from hermes"},
	}
	// The first writes after start-up may be throttled (429) or find the
	// default namespace not yet created: retry those, fail on anything else.
	var created *corev1.ConfigMap
	harness.WaitFor(t, k.APIServer, 30*time.Second, "configmap create", func() error {
		created, err = cs.CoreV1().ConfigMaps("default").Create(ctx, want, metav1.CreateOptions{})
		if err != nil && !apierrors.IsTooManyRequests(err) && !apierrors.IsNotFound(err) && !apierrors.IsServerTimeout(err) {
			t.Fatalf("create configmap: %v", err)
		}
		return err
	})
	got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "smoke", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get configmap: %v", err)
	}
	if got.UID != created.UID || got.Data["greeting"] != "hello from hermes" {
		t.Fatalf("read back %+v, want data of %+v", got, created)
	}

	out := k.Kubectl(t, "get", "configmap", "smoke", "-n", "default", "-o", "jsonpath={.data.greeting}")
	if out != "hello from hermes" {
		t.Fatalf("kubectl get: %q", out)
	}
	ver := k.Kubectl(t, "version", "-o", "yaml")
	if !strings.Contains(ver, "gitVersion: v1.34.4") {
		t.Fatalf("kubectl version does not report v1.34.4 for client and server:\n%s", ver)
	}
}
